"""Frame samplers: which frame indices of a clip make one training sample.

Every sampler is computed from the clip's frame count (stored in the shard metadata, so nothing
is decoded to choose) and a per-sample ``numpy.random.Generator``, so a sample's frames depend
only on the seed, the epoch and its key: a resumed run picks the same frames.
"""

from __future__ import annotations

import zlib

import numpy as np


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The random generator of one sample in one epoch.

    Args:
        seed: the run's data seed.
        epoch: the epoch the sample is drawn in (a new view every epoch).
        key: the sample's key.
    """
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def dense_indices(num_frames: int, length: int, stride: int, rng: np.random.Generator,
                  starts: list[int] | None = None) -> np.ndarray:
    """VideoMAE/SimVTP dense sampling: ``length`` frames ``stride`` apart at a random offset.

    A clip shorter than ``length * stride`` frames starts at 0 and repeats its last frame.

    Args:
        num_frames: frames in the clip.
        length: frames to return (T).
        stride: distance between returned frames.
        rng: the sample's generator.
        starts: if given (key frame indices), the window starts at one of those that leave
            room for the whole window; any offset when none does.
    """
    span = (length - 1) * stride + 1
    fits = [int(k) for k in starts or () if int(k) + span <= num_frames]
    if fits:
        offset = fits[int(rng.integers(len(fits)))]
    else:
        offset = int(rng.integers(0, num_frames - span + 1)) if num_frames >= span else 0
    return np.minimum(offset + np.arange(length) * stride, num_frames - 1)


def segment_indices(num_frames: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """TSN uniform segments: the clip cut into ``length`` equal parts, one random frame of each.

    Args:
        num_frames: frames in the clip.
        length: frames to return (T), one per segment.
        rng: the sample's generator.
    """
    edges = np.linspace(0, num_frames, length + 1)
    picks = edges[:-1] + rng.random(length) * (edges[1:] - edges[:-1])
    return np.minimum(np.floor(picks).astype(np.int64), num_frames - 1)


def sparse_indices(num_frames: int, length: int, clips: int,
                   rng: np.random.Generator) -> np.ndarray:
    """ClipBERT sparse sampling: ``clips`` short runs of consecutive frames, one per segment.

    Args:
        num_frames: frames in the clip.
        length: frames to return in all (T); must be a multiple of ``clips``.
        clips: number of short clips.
        rng: the sample's generator.
    """
    if length % clips:
        raise ValueError(f"num_frames {length} is not a multiple of sparse_clips {clips}")
    run = length // clips
    edges = np.linspace(0, num_frames, clips + 1)
    room = np.maximum(edges[1:] - edges[:-1] - run, 0)
    starts = np.floor(edges[:-1] + rng.random(clips) * (room + 1)).astype(np.int64)
    indices = (starts[:, None] + np.arange(run)[None, :]).reshape(-1)
    return np.minimum(indices, num_frames - 1)


def frame_indices(kind: str, num_frames: int, length: int, stride: int, clips: int,
                  rng: np.random.Generator, starts: list[int] | None = None) -> np.ndarray:
    """Dispatches to the sampler named ``kind`` (dense, segments or sparse); int32, sorted.

    Args:
        kind: ``dense``, ``segments`` or ``sparse``.
        num_frames: frames in the clip (must be >= 1).
        length: frames to return (T).
        stride: stride of the dense sampler.
        clips: clips of the sparse sampler.
        rng: the sample's generator.
        starts: key frames a dense window may start on (see dense_indices).
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if kind == "dense":
        indices = dense_indices(num_frames, length, stride, rng, starts)
    elif kind == "segments":
        indices = segment_indices(num_frames, length, rng)
    elif kind == "sparse":
        indices = sparse_indices(num_frames, length, clips, rng)
    else:
        raise ValueError(f"unknown sampler {kind!r}; choose dense, segments or sparse")
    return np.sort(indices).astype(np.int32)


def eval_indices(kind: str, num_frames: int, length: int, stride: int, clips: int,
                 view: int, views: int) -> np.ndarray:
    """Deterministic evaluation frames: view ``view`` of ``views`` evenly spaced clips.

    One view is the centre of the clip (the dense window centred, each segment's middle);
    several views spread the window's start, or the point inside each segment, evenly, so
    averaging their features covers the whole clip (multi-view testing).

    Args:
        kind: ``dense``, ``segments`` or ``sparse``.
        num_frames: frames in the clip (must be >= 1).
        length: frames to return (T).
        stride: stride of the dense sampler.
        clips: clips of the sparse sampler.
        view: which view, 0-based.
        views: how many views the clip is split into.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if not 0 <= view < views:
        raise ValueError(f"view must be in [0, {views}), got {view}")
    position = (view + 0.5) / views  # in (0, 1): where this view sits in the room it has
    if kind == "dense":
        room = max(num_frames - ((length - 1) * stride + 1), 0)
        indices = int(position * room + 0.5) + np.arange(length) * stride
    elif kind in ("segments", "sparse"):
        run = 1 if kind == "segments" else length // clips
        parts = length if kind == "segments" else clips
        if length % parts:
            raise ValueError(f"num_frames {length} is not a multiple of sparse_clips {clips}")
        edges = np.linspace(0, num_frames, parts + 1)
        room = np.maximum(edges[1:] - edges[:-1] - run, 0)
        starts = np.floor(edges[:-1] + position * room).astype(np.int64)
        indices = (starts[:, None] + np.arange(run)[None, :]).reshape(-1)
    else:
        raise ValueError(f"unknown sampler {kind!r}; choose dense, segments or sparse")
    return np.sort(np.minimum(indices, num_frames - 1)).astype(np.int32)


def shard_stride(stride: int, frame_step: int, kind: str) -> int:
    """The stride in stored frames on a shard that kept one frame in ``frame_step``.

    Raises:
        ValueError: a dense stride the shard's step does not divide (the window would not
            be the recipe's); re-shard with ``vtp shard --for-recipe`` or a matching step.
    """
    if frame_step == 1:
        return stride
    if kind == "dense" and stride % frame_step:
        raise ValueError(f"data.stride={stride} is not a multiple of the shards' frame_step "
                         f"{frame_step}; re-shard with --frame-step dividing {stride}")
    return max(stride // frame_step, 1)
