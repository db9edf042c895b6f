"""Peer loaders and the bare-decoder limit that `vtp bench pipeline` compares ours with.

Each peer is written the way its users write it, and given exactly our work: the frame
indices, crop window and flip that vtp's sampler draws for the sample (``BatchBuilder.
sample_feed``), a bilinear resize to the training size, ImageNet normalisation and a tube
mask, in a torch DataLoader with as many processes as ours. They read the same encoded
bytes from the same shards. After decoding, every peer does what torchvision's v2 transforms
recommend (``finish``): crop and resize the uint8 frames (torch's uint8 bilinear kernel, no
antialiasing, as vtp), flip, then convert to float and normalise. None of this is in the
training path; the libraries come with the optional ``bench`` extra
(``pip install -e '.[bench]'``).

- ``pyav``: VideoMAE-style: seek to the key frame before the window, decode forward until
  its last frame, keep the sampled ones (swscale to RGB).
- ``torchcodec``: ``VideoDecoder(bytes, seek_mode="approximate", num_ffmpeg_threads=1)``,
  ``get_frames_at(indices)``; approximate mode is the one its docs recommend for speed on
  well-formed constant-rate clips, one FFmpeg thread the one for many decoders in parallel.
  Containers that declare no frame count (WebM, IVF) fail in approximate mode ("number of
  frames is unknown"); there the peer falls back to the default exact mode, as a user must.
- ``decord``: ``VideoReader(BytesIO, num_threads=1).get_batch(indices)``.

``bare_decode`` is the physical limit: libavcodec (through PyAV, one thread, in-process, no
process start) decoding exactly the frames a sample needs (from the key frame before each
sampled frame, nothing twice); then, per kept frame, one libswscale call that resizes the
crop window to the training size and converts it to RGB at once (libavfilter's crop only
moves the plane pointers), all in uint8; then the one float pass vtp's output also needs
(ImageNet normalisation to float32 (3, T, S, S)).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from pipeline.config import IMAGENET_MEAN, IMAGENET_STD, MEAN_255, STD_255, DataConfig
from pipeline.masks import video_mask

PEERS = ("pyav", "torchcodec", "decord")


def available_peers() -> list[str]:
    """The peers whose library imports here (decord has no wheel for some platforms)."""
    import importlib.util

    modules = {"pyav": "av", "torchcodec": "torchcodec", "decord": "decord"}
    return [p for p in PEERS if importlib.util.find_spec(modules[p]) is not None]


def finish(frames: np.ndarray | torch.Tensor, feed: dict, size: int,
           channels_first: bool = False) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames (or (T, 3, H, W)) -> cropped, resized, flipped, normalised
    float32 (3, T, size, size): what every peer does after decoding.

    Written as torchvision's v2 transforms recommend: geometry on uint8 (its native uint8
    bilinear kernel), then ``to_dtype(float32, scale=True)`` and ``normalize``. The filter is
    vtp's: bilinear, no antialiasing.
    """
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    clip = torch.as_tensor(frames)
    if not channels_first:
        clip = clip.permute(0, 3, 1, 2)  # a channels-last view, which the uint8 kernel prefers
    (y0, x0), (y1, x1) = (int(v) for v in feed["roi_start"]), (int(v) for v in feed["roi_end"])
    clip = TF.resized_crop(clip, y0, x0, y1 - y0, x1 - x0, [size, size],
                           interpolation=InterpolationMode.BILINEAR, antialias=False)
    if int(feed["flip"]):
        clip = TF.horizontal_flip(clip)
    clip = TF.to_dtype(clip, torch.float32, scale=True)
    clip = TF.normalize(clip, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    return clip.permute(1, 0, 2, 3).contiguous()


def _rate(stream):
    return stream.average_rate or stream.guessed_rate  # IVF declares no duration


def _stream_index(stream, pts: int) -> int:
    start = stream.start_time or 0
    return int(round(float((pts - start) * stream.time_base * _rate(stream))))


def pyav_frames(video: bytes, indices: np.ndarray) -> np.ndarray:
    """VideoMAE-style PyAV read: seek to the key frame before the first index, decode on."""
    import av

    wanted = [int(i) for i in indices]
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        target = start + int(wanted[0] / _rate(stream) / stream.time_base)
        container.seek(target, stream=stream, backward=True, any_frame=False)
        got: dict[int, np.ndarray] = {}
        for frame in container.decode(stream):
            index = _stream_index(stream, frame.pts)
            if index in wanted and index not in got:
                got[index] = frame.to_ndarray(format="rgb24")
            if index >= wanted[-1]:
                break
    last = got[max(got)]  # a clip shorter than its metadata: repeat the last frame
    return np.stack([got.get(i, last) for i in wanted])


def torchcodec_frames(video: bytes, indices: np.ndarray) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(video, seek_mode="approximate", num_ffmpeg_threads=1)
    except ValueError:  # "number of frames is unknown": WebM, IVF declare no frame count
        decoder = VideoDecoder(video, seek_mode="exact", num_ffmpeg_threads=1)
    return decoder.get_frames_at([int(i) for i in indices]).data  # (T, 3, H, W)


def decord_frames(video: bytes, indices: np.ndarray) -> np.ndarray:
    import decord

    reader = decord.VideoReader(io.BytesIO(video), num_threads=1)
    return reader.get_batch([int(i) for i in indices]).asnumpy()


def peer_clip(peer: str, sample: dict, feed: dict, size: int) -> torch.Tensor:
    """One sample through ``peer``: (3, T, size, size) float32."""
    if peer == "pyav":
        return finish(pyav_frames(sample["video"], feed["frames"]), feed, size)
    if peer == "torchcodec":
        return finish(torchcodec_frames(sample["video"], feed["frames"]), feed, size, True)
    if peer == "decord":
        return finish(decord_frames(sample["video"], feed["frames"]), feed, size)
    raise ValueError(f"unknown peer {peer!r}; choose from {PEERS}")


class PeerDataset(torch.utils.data.Dataset):
    """Samples (key, video bytes, meta) -> one peer's (3, T, S, S) clip, per epoch.

    ``plans[epoch][index]`` is the frame/crop/flip plan vtp's sampler drew for that sample in
    that epoch, so a peer decodes exactly the frames ours does.
    """

    def __init__(self, peer: str, samples: list[dict], plans: list[list[dict]], size: int):
        self.peer, self.samples, self.plans, self.size = peer, samples, plans, size

    def __len__(self) -> int:
        return len(self.samples) * len(self.plans)

    def __getitem__(self, item: int) -> torch.Tensor:
        epoch, index = divmod(item, len(self.samples))
        return peer_clip(self.peer, self.samples[index], self.plans[epoch][index], self.size)


@dataclass
class Collate:
    """Stacks clips and draws the tube mask, as a peer's training loop would."""

    grid: tuple[int, int, int]
    ratio: float

    def __call__(self, clips: list[torch.Tensor]) -> dict:
        generator = torch.Generator().manual_seed(len(clips))
        mask = video_mask("tube", len(clips), self.grid, self.ratio, generator)
        batch = {"video": torch.stack(clips), "video_mask": mask}
        stamp = made_stamp()
        return batch if stamp is None else {**batch, "made": stamp}


def made_stamp() -> tuple[int, float, float] | None:
    """(worker id, wall clock, the worker's CPU seconds) as a DataLoader worker finishes a
    batch; None in the main process. Not part of a peer's work: what the benchmark times by
    (benchmarks/measure.py, ``_mark``). ``perf_counter`` is one clock for all processes."""
    info = torch.utils.data.get_worker_info()
    return None if info is None else (info.id, time.perf_counter(), time.process_time())


def peer_loader(peer: str, cfg: DataConfig, samples: list[dict], plans_: list[list[dict]],
                workers: int) -> torch.utils.data.DataLoader:
    """``peer`` over every epoch's plans, in a DataLoader with ``workers`` processes, started
    the way its users start them (the platform's default; their start-up is warm-up)."""
    dataset = PeerDataset(peer, samples, plans_, cfg.image_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, num_workers=workers, drop_last=True,
        collate_fn=Collate(cfg.mask_grid, cfg.video_mask_ratio),
        prefetch_factor=cfg.prefetch if workers else None)


def plans(cfg: DataConfig, samples: list[dict], epochs: int) -> list[list[dict]]:
    """What vtp's sampler draws for every sample in every epoch (frames, crop, flip)."""
    from pipeline.loader import BatchBuilder

    builder = BatchBuilder(cfg)
    return [[builder.sample_feed({**s, "epoch": epoch}) for s in samples]
            for epoch in range(epochs)]


def needed_frames(indices, keys: list[int]) -> list[int]:
    """The frames a decoder must decode to output ``indices``: each from its key frame,
    nothing twice (sorted)."""
    needed: set[int] = set()
    for index in {int(i) for i in indices}:
        start = max((k for k in keys if k <= index), default=0)
        needed.update(range(start, index + 1))
    return sorted(needed)


def pixel_graph(frame, feed: dict, size: int):
    """The limit's pixel work for one sample's frames, as one libavfilter graph on one thread:
    ``crop`` (moves the plane pointers: no copy), ``scale`` (one libswscale call per frame:
    bilinear resize of the crop window to ``size`` x ``size`` and YUV -> planar RGB together,
    in uint8), ``hflip`` when the plan flips. Planar RGB (``gbrp``) is already channels-first,
    so no pass reorders it. What vtp does with these pixels (DALI: RGB at full size in the
    decoder, then a bilinear resize of the window) is more work, never less.

    libswscale's ``bilinear`` is the accurate bilinear filter; downscaling, it widens to the
    scale factor (antialiasing: a few more taps than vtp's 2-tap DALI resize, a small cost
    next to decoding). Its ``fast_bilinear`` is cheaper but a coarser, shifted picture: not
    the same output, so not the limit.
    """
    import av

    (y0, x0), (y1, x1) = (int(v) for v in feed["roi_start"]), (int(v) for v in feed["roi_end"])
    graph = av.filter.Graph()
    graph.threads = 1
    nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                              time_base=Fraction(1, 25)),  # timestamps are not used
             graph.add("crop", f"w={x1 - x0}:h={y1 - y0}:x={x0}:y={y0}:exact=1"),
             graph.add("scale", f"w={size}:h={size}:flags=bilinear"),
             graph.add("format", "gbrp")]
    if int(feed["flip"]):
        nodes.append(graph.add("hflip"))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


_SCALE = (1.0 / torch.tensor(STD_255)).view(3, 1, 1, 1)
_SHIFT = (-torch.tensor(MEAN_255) / torch.tensor(STD_255)).view(3, 1, 1, 1)


def bare_decode(video: bytes, feed: dict, size: int,
                pixels: bool = True) -> tuple[torch.Tensor | None, int]:
    """The physical limit for one sample: libavcodec, one thread, decoding only the packets
    that the sampled frames depend on; then ``pixel_graph`` (crop, resize and RGB in one
    libswscale call per kept frame, flip) into one uint8 (3, T, S, S) buffer; then ImageNet
    normalisation to float32 (3, T, S, S), the output vtp hands over (vtp's DALI does it in
    the pass that flips; here it is a convert and two in-place passes on the 224 px clip,
    as vtp's own ``normalize_video``).

    Args:
        video: the encoded clip.
        feed: the sample's plan (frames, roi_start, roi_end, flip).
        size: output side.
        pixels: False stops after decoding (no RGB conversion, no resize): the decoder alone.

    Returns:
        (clip or None, frames decoded).
    """
    import av

    wanted = [int(i) for i in feed["frames"]]
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "SLICE", 1
        packets = [p for p in container.demux(stream) if p.size]
        keys = [i for i, p in enumerate(packets) if p.is_keyframe]
        wanted = [min(i, len(packets) - 1) for i in wanted]
        slots: dict[int, list[int]] = {}  # frame index -> places in the clip (repeats at the end)
        for slot, index in enumerate(wanted):
            slots.setdefault(index, []).append(slot)
        rgb = np.empty((3, len(wanted), size, size), np.uint8) if pixels else None
        graph = None
        kept: set[int] = set()

        def keep(index: int, frame) -> None:
            nonlocal graph
            kept.add(index)
            if not pixels:
                return
            if graph is None:
                graph = pixel_graph(frame, feed, size)
            graph.vpush(frame)
            out = graph.vpull()
            for channel, plane in enumerate(out.planes[i] for i in (2, 0, 1)):  # gbrp: G, B, R
                pixels_ = np.frombuffer(plane, np.uint8).reshape(size, -1)[:, :size]
                for slot in slots[index]:
                    rgb[channel, slot] = pixels_  # the one copy out of libav's buffer

        last = -2
        todo = needed_frames(wanted, keys)
        for index in todo:
            if index != last + 1:  # a jump: start clean at a key frame
                stream.codec_context.flush_buffers()
            for frame in stream.codec_context.decode(packets[index]):
                if index in slots and index not in kept:
                    keep(index, frame)
            last = index
        for frame in stream.codec_context.decode(None):  # frames the decoder still holds
            if todo[-1] in slots and todo[-1] not in kept:
                keep(todo[-1], frame)
    if not pixels:
        return None, len(todo)
    missing = set(slots) - kept
    if missing:
        raise ValueError(f"the decoder gave no picture for frames {sorted(missing)}")
    return torch.from_numpy(rgb).float().mul_(_SCALE).add_(_SHIFT), len(todo)


def bare_limit(samples: list[dict], plans_: list[list[dict]], size: int) -> dict:
    """CPU seconds per sample of the bare decoder with and without the pixel work (crop, resize
    and RGB, flip, normalise), best pass of ``len(plans_)`` each (after a warm-up sample), and the
    frames it decoded per sample."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core's work, as in a DataLoader worker
    out = {}
    try:
        for pixels, name in ((True, "cpu_per_sample"), (False, "decode_cpu_per_sample")):
            bare_decode(samples[0]["video"], plans_[0][0], size, pixels)  # warm-up
            best, frames = float("inf"), 0.0
            for epoch in plans_:
                start, decoded = time.process_time(), 0
                for sample, feed in zip(samples, epoch, strict=True):
                    decoded += bare_decode(sample["video"], feed, size, pixels)[1]
                best = min(best, (time.process_time() - start) / len(samples))
                frames = decoded / len(samples)
            out[name], out["frames_per_sample"] = best, frames
    finally:
        torch.set_num_threads(threads)
    return out
