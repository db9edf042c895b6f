"""DALI pixel work: decode the chosen frames, multi-scale crop, resize, flip, normalise.

One pipeline definition serves both devices; only the decoders' device argument differs
("cpu", or "mixed" when a GPU decodes with NVDEC/nvJPEG). Batches of MJPEG AVIs enter it as
their sampled JPEG frames (pipeline/mjpeg.py), everything else as encoded clips. Crop windows,
flips and frame indices are chosen in Python per sample (seeded) and fed in, so a batch is
reproducible from its keys.
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np
import torch

from pipeline import ivf, webm
from pipeline.buffers import BatchBuffers
from pipeline.config import MEAN_255, STD_255
from pipeline.mjpeg import is_whole_jpeg, jpeg_frames

# DALI 2.4: the CPU decoder handles only these; H.264 and friends need NVDEC ("mixed").
CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
GPU_CODECS = CPU_CODECS | {"h264", "hevc", "h265", "av1", "mpeg4"}


class CodecError(ValueError):
    """The shards' codec cannot be decoded on the chosen device."""


class CorruptSampleError(RuntimeError):
    """A sample's video could not be decoded; ``keys`` names the culprits.

    Built from the message alone too: DataLoader workers re-raise exceptions that way.
    """

    def __init__(self, message: str, keys: list[str] | None = None, detail: str = ""):
        super().__init__(message)
        found = re.search(r"sample\(s\) (\[[^\]]*\])", message)
        self.keys = keys if keys is not None else (ast.literal_eval(found[1]) if found else [])
        self.detail = detail or message

    @classmethod
    def of(cls, keys: list[str], detail: str) -> CorruptSampleError:
        return cls(f"corrupt video in sample(s) {keys}: DALI could not decode them ({detail}). "
                   f"Re-run `vtp shard` (which drops undecodable clips) or remove these keys.",
                   keys, f"undecodable video: {detail}")


def check_codec(codec: str, device: str) -> None:
    """Raises CodecError, with the fix, when ``device`` cannot decode ``codec``.

    Args:
        codec: ffprobe codec name from the shard metadata (h264, vp9, mjpeg, ...).
        device: ``cpu`` or ``gpu``.
    """
    allowed = CPU_CODECS if device == "cpu" else GPU_CODECS
    if codec.lower() in allowed:
        return
    gpu = (" or use data.device=gpu on a GPU (NVDEC decodes it)"
           if codec.lower() in GPU_CODECS else "")
    raise CodecError(
        f"the shards hold {codec} video, which DALI 2.4 cannot decode on device={device} "
        f"(it decodes {', '.join(sorted(allowed))} there). Fix: re-shard with "
        f"`vtp shard --codec vp9` (or mjpeg){gpu}."
    )


def multiscale_crop(height: int, width: int, scales: tuple[float, ...],
                    rng: np.random.Generator) -> tuple[int, int, int, int]:
    """VideoMAE's GroupMultiScaleCrop window: (y0, x0, h, w) in source pixels.

    Crop sides are scales of the short side, height and width at most one scale apart
    (max_distort=1), placed at one of the 13 fixed positions of ``more_fix_crop``.

    Args:
        height: frame height.
        width: frame width.
        scales: crop scales relative to the short side.
        rng: the sample's generator.
    """
    sides = [int(min(height, width) * s) for s in scales]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= 1]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
            (1, 1), (3, 1), (1, 3), (3, 3)]
    gy, gx = grid[int(rng.integers(len(grid)))]
    return gy * ((height - crop_h) // 4), gx * ((width - crop_w) // 4), crop_h, crop_w


def random_resized_crop(height: int, width: int, area: tuple[float, float],
                        ratio: tuple[float, float],
                        rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop window (SimVTP fine-tuning): (y0, x0, h, w).

    Area uniform in ``area`` times the frame's, aspect ratio log-uniform in ``ratio``; ten
    tries, then the centred crop of the frame clamped to ``ratio`` (torchvision's fallback).
    """
    total = height * width
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(10):
        target = total * rng.uniform(*area)
        aspect = float(np.exp(rng.uniform(log_lo, log_hi)))
        w, h = int(round((target * aspect) ** 0.5)), int(round((target / aspect) ** 0.5))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop(height: int, width: int, scale: float = 1.0, index: int = 0,
                count: int = 1) -> tuple[int, int, int, int]:
    """The evaluation crop: a square ``scale`` times the short side, (y0, x0, h, w).

    With ``count`` spatial views (VideoMAE/SimVTP test with 3), view ``index`` slides along
    the long side from one end (0) to the other (count-1); one view is centred.

    Args:
        height: frame height.
        width: frame width.
        scale: crop side relative to the short side.
        index: which spatial view, 0..count-1.
        count: spatial views per clip.
    """
    if not 0 <= index < count:
        raise ValueError(f"spatial view {index} is not in 0..{count - 1}")
    side = int(min(height, width) * scale)
    fraction = 0.5 if count == 1 else index / (count - 1)
    y0, x0 = (height - side) // 2, (width - side) // 2
    if height > width:
        y0 = int(round((height - side) * fraction))
    elif width > height:
        x0 = int(round((width - side) * fraction))
    return y0, x0, side, side


def video_pipeline(device: str, batch_size: int, num_threads: int, image_size: int,
                   device_id: int | None = None, jpeg_frames: int = 0,
                   normalize: bool = True, interpolation: str = "linear",
                   rand_augment: tuple[int, int] | None = None, seed: int = 0,
                   decode_only: bool = False):
    """Builds the DALI pipeline; feed it the inputs by name, run it, get (B, C, T, H, W) float.

    Inputs: ``video`` (encoded clip) and ``frames`` (int32 indices); or, with ``jpeg_frames=T``,
    ``jpeg0``..``jpeg{T-1}`` (frame t of every sample, for intra-only MJPEG); then
    ``roi_start``/``roi_end`` (float32 y, x crop window) and ``flip`` (int32), except with
    ``decode_only``: no flip, and the crop window only for JPEG frames.

    Args:
        device: ``cpu`` or ``gpu`` (decoders on device "mixed").
        batch_size: largest batch.
        num_threads: DALI CPU threads (samples decode in parallel across them).
        image_size: output height and width.
        device_id: CUDA device for ``gpu``; ignored for ``cpu`` (DALI needs None there).
        jpeg_frames: 0 for the video decoder; T to decode T JPEG frames per sample instead.
        normalize: float32 ImageNet-normalised output; False keeps uint8 (see normalize_video).
        interpolation: resize filter: ``nearest``, ``linear`` or ``cubic``.
        rand_augment: (n, m): DALI's RandAugment after the resize, n operations per clip at
            magnitude m of 10, the same operations on every frame of a clip; None for none.
        seed: seeds DALI's own draws (RandAugment); crops, flips and frames are fed in.
        decode_only: return the decoded (F, H, W, C) uint8 frames; resize, flip and
            normalise happen in torch (``torch_pixels``, the CPU ``resize_backend: torch``).
            JPEG frames are decoded inside the crop window only (libjpeg-turbo skips the
            rows and blocks outside it); video frames whole, cropped by torch.
    """
    from nvidia.dali import fn, pipeline_def, types

    decoder_device = "cpu" if device == "cpu" else "mixed"
    interp_type = {"nearest": types.INTERP_NN, "linear": types.INTERP_LINEAR,
                   "cubic": types.INTERP_CUBIC}[interpolation]

    # Queue depth 1: each run is fed exactly one batch (a deeper queue waits for more feeds);
    # prefetching happens one level up, in the DataLoader workers.
    @pipeline_def(batch_size=batch_size, num_threads=num_threads, prefetch_queue_depth=1,
                  device_id=device_id if device == "gpu" else None, exec_dynamic=True,
                  enable_conditionals=rand_augment is not None, seed=seed)
    def definition():
        if not decode_only or jpeg_frames:
            roi_start = fn.external_source(name="roi_start", dtype=types.FLOAT)
            roi_end = fn.external_source(name="roi_end", dtype=types.FLOAT)
        if not decode_only:
            flip = fn.external_source(name="flip", dtype=types.INT32)

        def crop_resize(frames):
            if decode_only:
                return frames
            return fn.resize(frames, roi_start=roi_start, roi_end=roi_end,
                             size=[image_size, image_size], interp_type=interp_type,
                             antialias=False)

        def decode_jpeg(data):
            if decode_only:  # only the crop window: a quarter less CPU for a 0.75 crop
                return fn.decoders.image_slice(
                    data, start=fn.cast(roi_start, dtype=types.INT32),
                    end=fn.cast(roi_end, dtype=types.INT32), axis_names="HW",
                    device=decoder_device, output_type=types.RGB)
            return crop_resize(fn.decoders.image(data, device=decoder_device,
                                                 output_type=types.RGB))

        if jpeg_frames:  # resized before stacking: the stack then copies the smaller frames
            images = [decode_jpeg(fn.external_source(name=f"jpeg{t}", dtype=types.UINT8))
                      for t in range(jpeg_frames)]
            clip = fn.stack(*images, axis=0, axis_name="F")
        else:
            video = fn.external_source(name="video", dtype=types.UINT8)
            frames = fn.external_source(name="frames", dtype=types.INT32)
            clip = crop_resize(fn.decoders.video(video, frames=frames, device=decoder_device))
        if rand_augment is not None:
            from nvidia.dali.auto_aug.rand_augment import rand_augment as apply_rand_augment

            # 11 bins make m a level of 10, as timm's "rand-m7" (VideoMAE/SimVTP fine-tuning);
            # monotonic magnitudes are timm's "inc1" operations.
            clip = apply_rand_augment(fn.reshape(clip, layout="FHWC"), n=rand_augment[0],
                                      m=rand_augment[1], num_magnitude_bins=11,
                                      monotonic_mag=True)
        if decode_only:
            return clip
        if not normalize:
            return fn.crop_mirror_normalize(clip, mirror=flip, output_layout="CFHW",
                                            dtype=types.UINT8)
        return fn.crop_mirror_normalize(clip, mirror=flip, mean=list(MEAN_255),
                                        std=list(STD_255), output_layout="CFHW",
                                        dtype=types.FLOAT)

    return definition()


# ImageNet normalisation of 0-255 values as one multiply and one add, per channel
_SCALE = (1.0 / torch.tensor(STD_255)).view(3, 1, 1, 1)
_SHIFT = (-torch.tensor(MEAN_255) / torch.tensor(STD_255)).view(3, 1, 1, 1)


def normalize_video(batch: dict) -> dict:
    """uint8 video -> float32 ImageNet-normalised, on whatever device the batch is on.

    Args:
        batch: a batch dict whose ``video`` may be uint8 (B, C, T, H, W); float passes through.
    """
    video = batch["video"]
    if video.dtype != torch.uint8:
        return batch
    scale, shift = (t.to(video.device).unsqueeze(0) for t in (_SCALE, _SHIFT))
    return {**batch, "video": video.float().mul_(scale).add_(shift)}  # one float buffer


def torch_pixels(frames: list[np.ndarray], feeds: dict[str, list], image_size: int,
                 normalize: bool, cropped: bool = False, pool: Executor | None = None,
                 buffers: BatchBuffers | None = None) -> torch.Tensor:
    """Crop, bilinear resize, flip and normalise decoded (F, H, W, C) uint8 clips in torch:
    (B, C, F, S, S) float32, or uint8 without ``normalize``.

    torch resizes uint8 channels-last images with a vectorised bilinear kernel (about a ninth
    of the CPU of DALI 2.4's CPU resize for 224 px outputs, benchmarks/RESULTS.md); the
    filter is the same (bilinear, no antialiasing, pixel centres as DALI's). Each clip is
    written into the batch and normalised there while it is still in cache: converting a
    stacked batch to float cost more than the resize.

    Args:
        cropped: the frames are already the crop window (JPEG frames decoded inside it).
        pool: threads that work on clips at once (torch releases the GIL in each op);
            None works through them in this thread.
        buffers: where the batch is written (a free earlier batch); None allocates it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-clip ops this small: more threads only spin (3x the CPU)
    try:
        shape = (len(frames), 3, frames[0].shape[0], image_size, image_size)
        dtype = torch.float32 if normalize else torch.uint8
        out = buffers.empty(shape, dtype) if buffers else torch.empty(shape, dtype=dtype)

        def one(index: int) -> None:
            target = out[index]
            target.copy_(_torch_clip(frames[index], index, feeds, image_size, cropped))
            if normalize:
                target.mul_(_SCALE).add_(_SHIFT)

        list((pool.map if pool else map)(one, range(len(frames))))
        return out
    finally:
        torch.set_num_threads(threads)


def _torch_clip(clip: np.ndarray, index: int, feeds: dict[str, list], image_size: int,
                cropped: bool = False) -> torch.Tensor:
    """One decoded (F, H, W, C) clip cropped, resized and flipped: (C, F, S, S) uint8."""
    import torch.nn.functional as F

    view = torch.from_numpy(clip)
    if not cropped:
        (y0, x0), (y1, x1) = (feeds["roi_start"][index].astype(int),
                              feeds["roi_end"][index].astype(int))
        view = view[:, y0:y1, x0:x1, :]
    view = view.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(view, size=(image_size, image_size), mode="bilinear",
                        align_corners=False, antialias=False)
    if int(feeds["flip"][index]):
        out = out.flip(-1)
    return out.permute(1, 0, 2, 3)


def _last_line(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "no longer valid" not in line
              and not line.lstrip().startswith(("C++ context", "Stacktrace", "[/"))]
    return (useful or lines or [type(err).__name__])[-1].strip()


def _to_torch(outputs, device: str) -> torch.Tensor:
    """The batch as a torch tensor. CPU: zero-copy through DLPack (the dynamic executor hands
    out a fresh buffer per run, so the tensor stays valid after later runs); GPU: a copy
    ordered on DALI's stream."""
    dense = outputs.as_tensor()
    if device != "gpu":
        return torch.from_dlpack(dense)
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dtype = torch.uint8 if str(dense.dtype).endswith("UINT8") else torch.float32
    target = torch.empty(dense.shape(), dtype=dtype, device="cuda")
    feed_ndarray(dense, target, cuda_stream=torch.cuda.current_stream())
    return target


def _cut(video: np.ndarray, frames: np.ndarray):
    if ivf.is_ivf(video):
        return ivf.cut(video, frames)
    if webm.is_webm(video):
        return webm.cut_to_ivf(video, frames)
    return None


def cut_clips(feeds: dict[str, list]) -> dict[str, list]:
    """IVF and WebM (VP8/VP9) clips cut to the frames from the key frame before each sample's
    first one, as IVF: DALI's CPU decoder would otherwise decode every frame from the clip's
    start (pipeline/ivf.py, pipeline/webm.py). Clips that cannot be cut go through whole."""
    videos, frames = list(feeds["video"]), list(feeds["frames"])
    for index, video in enumerate(videos):
        cut = _cut(video, frames[index])
        if cut is not None:
            videos[index], frames[index] = cut
    return {**feeds, "video": videos, "frames": frames}


class VideoDecoder:
    """Runs the DALI pipeline on a batch of encoded clips; rebuilt after a failure.

    Batches of MJPEG AVIs go through the JPEG-frame variant of the pipeline (see
    pipeline/mjpeg.py); everything else, or an AVI that cannot be cut, through the video decoder.

    Args:
        device: ``cpu`` or ``gpu``.
        batch_size: largest batch.
        num_threads: DALI CPU threads.
        image_size: output height and width.
        device_id: CUDA device for ``gpu``.
        normalize: float32 normalised output (else uint8).
        interpolation: resize filter: ``nearest``, ``linear`` or ``cubic``.
        rand_augment: (n, m) of DALI's RandAugment, or None (see video_pipeline).
        seed: seeds DALI's own draws.
        resize_backend: ``auto``/``torch`` (torch resizes on the CPU where it can) or ``dali``
            (see DataConfig).
    """

    def __init__(self, device: str, batch_size: int, num_threads: int, image_size: int,
                 device_id: int | None = None, normalize: bool = True,
                 interpolation: str = "linear", rand_augment: tuple[int, int] | None = None,
                 seed: int = 0, resize_backend: str = "auto"):
        # torch resizes only what the CPU decoded (bilinear); the GPU path and RandAugment
        # (which runs after DALI's resize) stay all DALI
        decode_only = (device == "cpu" and resize_backend != "dali"
                       and interpolation == "linear" and rand_augment is None)
        self.options = dict(device=device, num_threads=num_threads, image_size=image_size,
                            device_id=device_id, normalize=normalize,
                            interpolation=interpolation, rand_augment=rand_augment, seed=seed,
                            decode_only=decode_only)
        self.batch_size = batch_size
        self._pipes: dict[int, object] = {}  # jpeg_frames (0: video decoder) -> pipeline
        self._pool: ThreadPoolExecutor | None = None  # torch's resize threads, made on first use
        self._buffers = BatchBuffers()

    def _build(self, batch_size: int, jpeg_frames: int):
        pipe = video_pipeline(batch_size=batch_size, jpeg_frames=jpeg_frames, **self.options)
        pipe.build()
        return pipe

    def _run(self, pipe, feeds: dict[str, list]) -> torch.Tensor:
        inputs = feeds
        jpeg = "jpeg0" in feeds
        if self.options["decode_only"]:  # DALI flips nothing then, and crops only JPEG frames
            unused = ("flip",) if jpeg else ("roi_start", "roi_end", "flip")
            inputs = {k: v for k, v in feeds.items() if k not in unused}
        for name, values in inputs.items():
            pipe.feed_input(name, values)
        (outputs,) = pipe.run()
        if self.options["decode_only"]:
            frames = [np.asarray(outputs[i]) for i in range(len(outputs))]
            if self._pool is None:  # as many clips at once as DALI has threads
                self._pool = ThreadPoolExecutor(self.options["num_threads"])
            return torch_pixels(frames, feeds, self.options["image_size"],
                                self.options["normalize"], cropped=jpeg, pool=self._pool,
                                buffers=self._buffers)
        return _to_torch(outputs, self.options["device"])

    @staticmethod
    def route(feeds: dict[str, list], codecs: list[str] | None) -> tuple[dict[str, list], int]:
        """The feeds for the JPEG-frame pipeline when every clip is a cuttable MJPEG AVI."""
        if not codecs or any(codec != "mjpeg" for codec in codecs):
            return feeds, 0
        cut = [jpeg_frames(video, frames) for video, frames in zip(feeds["video"],
                                                                     feeds["frames"], strict=True)]
        if any(frames is None for frames in cut):
            return feeds, 0
        steps = len(cut[0])
        routed = {f"jpeg{t}": [frames[t] for frames in cut] for t in range(steps)}
        routed.update({name: feeds[name] for name in ("roi_start", "roi_end", "flip")})
        return routed, steps

    def __call__(self, feeds: dict[str, list], keys: list[str],
                 codecs: list[str] | None = None) -> torch.Tensor:
        """Decodes one batch.

        Args:
            feeds: per-input lists: ``video`` uint8 bytes, ``frames`` int32 indices, float32
                ``roi_start``/``roi_end`` (y, x), int32 ``flip``.
            keys: the samples' keys, named in the error if one is corrupt.
            codecs: the samples' codecs (MJPEG batches take the JPEG-frame route).

        Raises:
            CorruptSampleError: naming the keys whose video DALI could not decode.
        """
        feeds = cut_clips(feeds)
        feeds, mode = self.route(feeds, codecs)
        if mode:  # a cut-off JPEG would cost a DALI failure, and a few of those a segfault
            cut = [key for index, key in enumerate(keys)
                   if not all(is_whole_jpeg(feeds[f"jpeg{t}"][index]) for t in range(mode))]
            if cut:
                raise CorruptSampleError.of(cut, "a sampled MJPEG frame is not a whole JPEG")
        if mode not in self._pipes:
            self._pipes[mode] = self._build(self.batch_size, mode)
        try:
            return self._run(self._pipes[mode], feeds)
        except Exception as err:  # DALI raises RuntimeError, IndexError, ... for bad input
            del self._pipes[mode]  # DALI invalidates a pipeline after any error
            bad = self._find_corrupt(feeds, keys, mode)
            raise CorruptSampleError.of(bad or keys, _last_line(err)) from err

    def _find_corrupt(self, feeds: dict[str, list], keys: list[str], mode: int) -> list[str]:
        """Decodes the samples one by one, each in a fresh pipeline, to name the bad ones."""
        bad = []
        pipe = None
        for index, key in enumerate(keys):
            pipe = pipe or self._build(1, mode)
            try:
                self._run(pipe, {name: [values[index]] for name, values in feeds.items()})
            except Exception:
                bad.append(key)
                pipe = None
        return bad
