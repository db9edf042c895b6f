"""Peer loaders and the bare-decoder limit that `vtp bench pipeline` compares ours with.

Each peer is written the way its users write it, and given exactly our work: the frame
indices, crop window and flip that vtp's sampler draws for the sample (``BatchBuilder.
sample_feed``), a bilinear resize to the training size, ImageNet normalisation and a tube
mask, in a torch DataLoader with as many processes as ours. They read the same encoded
bytes from the same shards. None of this is in the training path; the libraries come with
the optional ``bench`` extra (``pip install -e '.[bench]'``).

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
sampled frame, nothing twice), then the same RGB conversion and resize.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import MEAN_255, STD_255, DataConfig
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
    float32 (3, T, size, size): what every peer does after decoding."""
    clip = torch.as_tensor(frames)
    if not channels_first:
        clip = clip.permute(0, 3, 1, 2)
    (y0, x0), (y1, x1) = (int(v) for v in feed["roi_start"]), (int(v) for v in feed["roi_end"])
    clip = clip[:, :, y0:y1, x0:x1].float()
    clip = F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=False)
    if int(feed["flip"]):
        clip = clip.flip(-1)
    mean = torch.tensor(MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(STD_255).view(1, 3, 1, 1)
    return ((clip - mean) / std).permute(1, 0, 2, 3).contiguous()


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
        return {"video": torch.stack(clips), "video_mask": mask}


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


def bare_decode(video: bytes, feed: dict, size: int,
                pixels: bool = True) -> tuple[torch.Tensor | None, int]:
    """The physical limit for one sample: libavcodec, one thread, decoding only the packets
    that the sampled frames depend on, then RGB, crop, resize, normalise.

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
        got, last = {}, -2
        todo = needed_frames(wanted, keys)
        for index in todo:
            if index != last + 1:  # a jump: start clean at a key frame
                stream.codec_context.flush_buffers()
            for frame in stream.codec_context.decode(packets[index]):
                if index in wanted:
                    got[index] = frame.to_ndarray(format="rgb24") if pixels else frame
            last = index
        for frame in stream.codec_context.decode(None):  # frames the decoder still holds
            got.setdefault(todo[-1], frame.to_ndarray(format="rgb24") if pixels else frame)
    if not pixels:
        return None, len(todo)
    return finish(np.stack([got[i] for i in wanted]), feed, size), len(todo)


def bare_limit(samples: list[dict], plans_: list[list[dict]], size: int) -> dict:
    """CPU seconds per sample of the bare decoder with and without the pixel work (RGB, crop,
    resize, normalise), best pass of ``len(plans_)`` each (after a warm-up sample), and the
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
