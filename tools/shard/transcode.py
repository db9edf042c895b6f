"""ffmpeg command building for `vtp shard`, with the rules that make untrusted input safe.

Web videos are untrusted. Every ffmpeg we start:
- reads its input through ``file:`` + an absolute path, so a name such as ``-i.mp4`` is never
  read as an option and ``a:b.mp4`` never as a protocol;
- allows only the ``file`` protocol (``-protocol_whitelist file``), so no network access;
- is told the input's demuxer with ``-f``: the self-contained container its first bytes
  show (see ``source.py``), so a file that is really an HLS playlist, a concat list or an
  image pattern is refused instead of being followed to other files.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from tools.shard.source import SELF_CONTAINED, ffmpeg_message


@dataclass(frozen=True)
class Codec:
    """An output codec: its encoder, container and the options that make it DALI-friendly."""

    encoder: str
    ext: str
    muxer: str
    options: tuple[tuple[str, str], ...]


CODECS = {
    "h264": Codec("libx264", "mp4", "mp4",
                  (("preset", "veryfast"), ("crf", "23"), ("movflags", "+faststart"))),
    "vp9": Codec("libvpx-vp9", "webm", "webm",
                 (("deadline", "realtime"), ("cpu-used", "8"), ("crf", "32"), ("b:v", "0"),
                  ("row-mt", "1"))),
    "mjpeg": Codec("mjpeg", "avi", "avi", (("q:v", "3"),)),
}
CRF_RANGE = {"h264": (0, 51), "vp9": (0, 63), "vp9-ivf": (0, 63)}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
# VP9 in IVF: the pipeline cuts a clip at the key frame before a window (pipeline/ivf.py).
CODECS["vp9-ivf"] = Codec("libvpx-vp9", "ivf", "ivf", CODECS["vp9"].options)


@dataclass(frozen=True)
class TranscodeOptions:
    """What every output clip looks like.

    Args:
        codec: ``h264`` (mp4, GPU decoding), ``vp9`` (webm) or ``mjpeg`` (avi) for CPU decoding.
        fps: output frame rate; None keeps the source's.
        short_side: output short side in pixels (aspect kept, even sizes); None keeps the size.
        start: clip window start in seconds.
        max_seconds: clip window length in seconds; None keeps the rest of the video.
        gop: key frame interval in frames.
        preset: x264 speed/size trade-off (h264 only).
        crf: constant quality for h264/vp9; None keeps the codec's default (23 / 32).
        threads: threads per ffmpeg process (the process pool supplies the parallelism).
        timeout: seconds before a stuck ffmpeg is killed and the sample fails.
        frame_step: keep every N-th frame (a stride-N dense window then reads N times fewer
            frames; recorded in the shard meta, see tools/shard/settings.py).
    """

    codec: str = "h264"
    fps: float | None = None
    short_side: int | None = None
    start: float = 0.0
    max_seconds: float | None = None
    gop: int = 32
    preset: str = "veryfast"
    crf: int | None = None
    threads: int = 1
    timeout: float = 600.0
    frame_step: int = 1

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        numbers = {"fps": self.fps, "start": self.start, "max_seconds": self.max_seconds,
                   "timeout": self.timeout}
        bad = [f"{k}={v}" for k, v in numbers.items() if v is not None and not math.isfinite(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be a finite number")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.crf is not None:
            if self.codec not in CRF_RANGE:
                raise ValueError(f"crf applies to {sorted(CRF_RANGE)} only, not {self.codec}")
            low, high = CRF_RANGE[self.codec]
            if not low <= self.crf <= high:
                raise ValueError(f"crf for {self.codec} must be in [{low}, {high}], got {self.crf}")
        if self.codec == "h264" and self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, "
                             f"got {self.preset!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.short_side is not None and (self.short_side < 2 or self.short_side % 2):
            raise ValueError(f"short_side must be an even number >= 2, got {self.short_side}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.frame_step < 1:
            raise ValueError(f"frame_step must be >= 1, got {self.frame_step}")
        bad_length = self.max_seconds is not None and self.max_seconds <= 0
        if self.gop < 1 or self.start < 0 or bad_length:
            raise ValueError("gop must be >= 1, start >= 0 and max_seconds > 0")


class TranscodeError(RuntimeError):
    """ffmpeg refused or failed; the message carries ffmpeg's own words."""


def safe_input(path: Path, demuxer: str, **options) -> ffmpeg.nodes.FilterableStream:
    """An ffmpeg-python input that can only read this one local file as this one container.

    Raises:
        TranscodeError: ``demuxer`` is not one of the self-contained ones.
    """
    if demuxer not in SELF_CONTAINED:
        raise TranscodeError(f"refused: demuxer {demuxer!r} is not one of {SELF_CONTAINED}")
    return ffmpeg.input(f"file:{Path(path).absolute()}", f=demuxer, protocol_whitelist="file",
                        **options)


def _scaled(stream, short_side: int | None):
    if short_side is None:  # yuv420p needs even sizes
        return stream.filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
    return stream.filter("scale", short_side, short_side, force_original_aspect_ratio="increase",
                         force_divisible_by=2)


def _codec_options(options: TranscodeOptions) -> dict[str, str]:
    chosen = dict(CODECS[options.codec].options)
    if "preset" in chosen:
        chosen["preset"] = options.preset
    if options.crf is not None and "crf" in chosen:
        chosen["crf"] = str(options.crf)
    return chosen


def build_command(src: Path, dst: Path, options: TranscodeOptions,
                  demuxer: str = "mov") -> list[str]:
    """The full ffmpeg argument list that transcodes ``src`` into ``dst``.

    Args:
        src: the input video.
        dst: the output file; its container is the codec's.
        options: the output format.
        demuxer: the input's container, from `source.sniff` (never chosen by its name).
    """
    window = {"ss": options.start} if options.start else {}
    if options.max_seconds is not None:
        window["t"] = options.max_seconds
    video = safe_input(src, demuxer, **window).video
    if options.frame_step > 1:  # framestep divides the declared rate too: no duplicated frames
        video = video.filter("framestep", step=options.frame_step)
    if options.fps is not None:
        video = video.filter("fps", fps=options.fps)
    video = _scaled(video, options.short_side)
    codec = CODECS[options.codec]
    output = ffmpeg.output(
        video, f"file:{Path(dst).absolute()}", f=codec.muxer, vcodec=codec.encoder,
        pix_fmt="yuv420p", g=options.gop, threads=options.threads, an=None,
        **_codec_options(options),
    )
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            *output.get_args()]


def transcode(src: Path, dst: Path, options: TranscodeOptions, demuxer: str = "mov") -> None:
    """Runs ffmpeg to write ``dst``.

    Raises:
        TranscodeError: with ffmpeg's message, or a timeout.
    """
    command = build_command(src, dst, options, demuxer)
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                timeout=options.timeout)
    except subprocess.TimeoutExpired as err:
        raise TranscodeError(f"ffmpeg: timed out after {options.timeout:.0f} s") from err
    if result.returncode != 0:
        raise TranscodeError(f"ffmpeg: {ffmpeg_message(result.stderr, src)}")
