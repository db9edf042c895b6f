"""Draws a scene into frames with numpy and encodes them with ffmpeg (through ffmpeg-python).

Rendering is vectorised per clip: the background is broadcast over time, objects are stamped
with precomputed sprite masks, and noise comes from a small bank of noise frames. Encoding
uses one x264 thread with bit-exact flags, so the same seed gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from tools.synth.presets import PRESETS, Preset
from tools.synth.scene import COLOURS, DIRECTIONS, Scene

DISTRACTOR_RGB = (128, 128, 128)


def sprite(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) mask of a shape."""
    c = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side]
    u, v = (x - c) / (side / 2), (y - c) / (side / 2)  # in [-1, 1]
    masks = {
        "circle": u**2 + v**2 <= 0.95,
        "square": (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85),
        "triangle": (v <= 0.85) & (v >= -0.9) & (np.abs(u) <= (v + 0.9) / 1.75 * 0.95),
        "diamond": np.abs(u) + np.abs(v) <= 0.98,
        "cross": ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3))
        & (np.abs(u) <= 0.95) & (np.abs(v) <= 0.95),
    }
    return masks[shape]


def background(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 background with a small random tint so no two are identical."""
    tint = rng.integers(-12, 13, size=3)
    y, x = np.mgrid[0:height, 0:width]
    if kind == "dark":
        img = np.full((height, width), 25.0)
    elif kind == "grey":
        img = np.full((height, width), 100.0)
    elif kind == "checkered":
        cell = int(rng.integers(16, 33))
        img = np.where(((x // cell) + (y // cell)) % 2 == 0, 70.0, 115.0)
    elif kind == "striped":
        period = int(rng.integers(12, 29))
        img = np.where((x + y * int(rng.integers(0, 2))) % period < period // 2, 55.0, 105.0)
    elif kind == "textured":
        coarse = rng.normal(85, 25, size=(height // 8 + 1, width // 8 + 1))
        img = np.kron(coarse, np.ones((8, 8)))[:height, :width]
    else:
        raise ValueError(f"unknown background {kind!r}")
    rgb = img[..., None] + tint
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _stamp(frame: np.ndarray, mask: np.ndarray, top: int, left: int, rgb) -> None:
    """Paints ``mask`` at (top, left) into ``frame``, clipped to the frame's borders."""
    h, w = frame.shape[:2]
    side = mask.shape[0]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    if y0 >= y1 or x0 >= x1:
        return
    sub = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    frame[y0:y1, x0:x1][sub] = rgb


def trajectory(scene: Scene, num_frames: int, height: int,
               preset: Preset = PRESETS["hard"], fps: int = 16) -> np.ndarray:
    """(T, 2) displacement (dx, dy) from the start; the direction switches at mid-clip.

    Speeds are pixels per frame at 240 lines and 16 fps, so a clip rendered at another frame
    rate or size shows the same motion per second relative to the frame.
    """
    step = preset.speeds[scene.speed] * height / 240 * 16 / fps
    legs = np.array([DIRECTIONS[d] for d in scene.motion], dtype=np.float64)
    leg_of_frame = np.minimum(np.arange(num_frames) * len(legs) // num_frames, len(legs) - 1)
    velocity = legs[leg_of_frame] * step
    return np.cumsum(velocity, axis=0) - velocity[0]


def starts_in_frame(moved: np.ndarray, side: int, width: int, height: int, count: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(count, 2) top-left starts from which the whole path ``moved`` stays inside the frame
    (centred on an axis where the path is longer than the room)."""
    low = -moved.min(axis=0)
    high = np.array([width - side, height - side]) - moved.max(axis=0)
    low, high = np.minimum(low, (low + high) / 2), np.maximum(high, (low + high) / 2)
    return rng.uniform(low, high, size=(count, 2))


def render(scene: Scene, *, fps: int, height: int, width: int, rng: np.random.Generator,
           preset: Preset = PRESETS["hard"]) -> np.ndarray:
    """All frames of a scene, (T, H, W, 3) uint8."""
    num_frames = scene.duration_s * fps
    video = np.broadcast_to(background(scene.background, height, width, rng),
                            (num_frames, height, width, 3)).copy()
    side = max(6, int(preset.sizes[scene.size] * height))
    if scene.distractor is not None:
        mask = sprite(scene.distractor, side)
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        for frame in video:
            _stamp(frame, mask, top, left, DISTRACTOR_RGB)
    mask, rgb = sprite(scene.shape, side), COLOURS[scene.colour]
    moved = trajectory(scene, num_frames, height, preset, fps)
    if preset.wrap:
        starts = rng.uniform((0, 0), (width, height), size=(scene.count, 2))
        span = np.array([width + side, height + side])
        # Objects leave one edge and come back at the other, so the direction never changes.
        paths = (starts[None] + moved[:, None]) % span - side
    else:
        paths = starts_in_frame(moved, side, width, height, scene.count, rng)[None] + moved[:, None]
    for frame, positions in zip(video, paths, strict=True):
        for x, y in positions.astype(int):
            _stamp(frame, mask, y, x, rgb)
    if scene.noise:
        bank = rng.normal(0, preset.noise_std, size=(4, height, width, 3)).astype(np.int16)
        for t in range(0, num_frames, 4):
            chunk = video[t : t + 4].astype(np.int16) + bank[: len(video[t : t + 4])]
            video[t : t + 4] = np.clip(chunk, 0, 255)
    return video


def encode_h264(frames: np.ndarray, path: Path, *, fps: int, gop: int) -> None:
    """Encodes (T, H, W, 3) uint8 frames to an H.264 mp4 at ``path``, bit-exactly."""
    num_frames, height, width, _ = frames.shape
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                          framerate=fps)
    stream = ffmpeg.output(
        stream, str(path), vcodec="libx264", pix_fmt="yuv420p", preset="veryfast", crf=23, g=gop,
        threads=1, map_metadata=-1, fflags="+bitexact", **{"flags:v": "+bitexact"}, f="mp4",
    )
    ffmpeg.run(stream, input=frames.tobytes(), quiet=True, overwrite_output=True)
