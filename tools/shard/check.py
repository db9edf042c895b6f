"""Decode-check transcoded clips before they may enter a shard.

One sample DALI cannot decode kills a whole DALI pipeline, so every output is decoded once
here, the way the pipeline will read it: H.264 in full by ffmpeg (DALI's CPU decoder lacks
H.264; on a GPU the pipeline uses NVDEC); VP9 by DALI's CPU ``decoders.video``, whose frame
count must match the packets ffmpeg reads; MJPEG as the pipeline reads it (pipeline/mjpeg.py):
the AVI cut into its JPEG frames, each frame's marker structure checked in Python (a failed
decode can leave DALI 2.4's image decoder crashing on the next one), then every frame decoded
by DALI's ``decoders.image``; rate and size come from the AVI headers and the decoder. An MJPEG
AVI that cannot be cut would take the video decoder in training, so it is checked like VP9.
The frame count written to ``meta`` is the count the decoder gave.

Several clips are decoded by one ffmpeg process: on short clips, starting ffmpeg costs more
CPU than decoding. When a batch fails, each clip is decoded alone to name the bad one.
"""

from __future__ import annotations

import functools
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.mjpeg import avi_chunks, avi_frame_rate, is_whole_jpeg
from tools.shard.source import ffmpeg_message
from tools.shard.transcode import CODECS

DALI_CODECS = ("vp9", "vp9-ivf", "mjpeg")
JPEG_BATCH = 64  # JPEG frames per DALI run; a clip's frames go through in a few runs


class CheckError(RuntimeError):
    """The output failed a check; the message says which one and why."""


def _decode_command(paths: list[Path], crcs: list[Path], codec: str) -> list[str]:
    # One decoder thread: the process pool already keeps every core busy.
    inputs = [arg for p in paths for arg in
              ("-threads", "1", "-f", CODECS[codec].muxer, "-protocol_whitelist", "file",
               "-i", f"file:{p.absolute()}")]
    # framecrc: one line per frame, plus the stream's size and time base. DALI decodes the CPU
    # codecs afterwards, so ffmpeg only reads their packets (-c copy) and the two counts must agree.
    copy = ("-c", "copy") if codec in DALI_CODECS else ()
    outputs = [arg for i, crc in enumerate(crcs) for arg in
               ("-map", f"{i}:v:0", *copy, "-fps_mode", "passthrough", "-f", "framecrc",
                f"file:{crc.absolute()}")]
    return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-xerror", "-y", *inputs, *outputs]


def _fps(frames: list[list[str]], tb: Fraction) -> float:
    """Frame rate from the timestamps, snapped to N or N/1.001 (webm keeps milliseconds only)."""
    pts = [int(f[2]) for f in frames]
    span = (max(pts) - min(pts)) * tb
    raw = float((len(pts) - 1) / span) if span > 0 else float(1 / (tb * max(int(frames[0][3]), 1)))
    for nice in (round(raw), round(raw * 1.001) / 1.001):
        if nice and abs(nice - raw) / raw < 0.005:
            return float(round(nice, 3))
    return round(raw, 3)


def _parse_framecrc(text: str, codec: str) -> dict:
    header = dict(line[1:].split(": ", 1) for line in text.splitlines()
                  if line.startswith("#") and ": " in line)
    frames = [line.split(",") for line in text.splitlines() if line and not line.startswith("#")]
    if not frames or "dimensions 0" not in header:
        raise CheckError("ffmpeg decode: no frames decoded from the output")
    width, height = (int(v) for v in header["dimensions 0"].split("x"))
    return {"frames": len(frames), "fps": _fps(frames, Fraction(header["tb 0"])), "width": width,
            "height": height, "codec": codec}


def ffmpeg_decode(paths: list[Path], codec: str, timeout: float = 600.0) -> list[dict]:
    """Decodes every frame of every clip in one ffmpeg process (reads every packet only, for
    the codecs DALI decodes next).

    Returns:
        per clip: frames, fps, width, height, codec.

    Raises:
        CheckError: ffmpeg reported any error (``-xerror`` stops at the first one) or a clip
            has no frames.
    """
    crcs = [p.with_name(f"{p.name}.crc") for p in paths]
    try:
        result = subprocess.run(_decode_command(paths, crcs, codec), capture_output=True,
                                text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise CheckError(f"ffmpeg decode: timed out after {timeout:.0f} s") from err
    if result.returncode != 0 or result.stderr.strip():
        message = result.stderr
        for p in paths:
            message = ffmpeg_message(message, p)
        raise CheckError(f"ffmpeg decode: {message}")
    return [_parse_framecrc(crc.read_text(), codec) for crc in crcs]


@functools.lru_cache(maxsize=1)
def _dali_pipeline():
    """One CPU-only DALI pipeline per worker process (building one costs far more than a decode)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1,
                  exec_dynamic=True)
    def decode():
        data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(data, device="cpu")

    pipe = decode()
    pipe.build()
    return pipe


@functools.lru_cache(maxsize=1)
def _jpeg_pipeline():
    """The pipeline's MJPEG decoder, one per worker process (it builds in milliseconds).

    GRAY entropy-decodes every component (the scan interleaves them, so the whole bitstream is
    read) and transforms luma only; what RGB adds (chroma IDCT, upsampling, colour conversion)
    is arithmetic that cannot fail on a bitstream that decoded, so GRAY checks as much for less
    work (what the check costs is measured in benchmarks/results/shard.md)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=JPEG_BATCH, num_threads=1, device_id=None, prefetch_queue_depth=1,
                  exec_dynamic=True)
    def decode():
        data = fn.external_source(name="data", dtype=types.UINT8, ndim=1)
        return fn.decoders.image(data, device="cpu", output_type=types.GRAY)

    pipe = decode()
    pipe.build()
    return pipe


def _dali_error(err: Exception) -> str:
    """DALI's own words: what follows "encountered:", without its traceback and boilerplate."""
    text = str(err).split("encountered:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and "no longer valid" not in line and "Critical error" not in line]
    return "; ".join(lines[:2]) or type(err).__name__


def dali_jpeg_frames(data: np.ndarray, chunks: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Decodes every JPEG frame of an MJPEG AVI with DALI's image decoder.

    Args:
        data: the AVI as a uint8 array.
        chunks: (offset, size) of each frame, from ``avi_chunks``.

    Returns:
        (frames, height, width); every frame must have that size.

    Raises:
        CheckError: naming the first frame that is not a whole JPEG, the frames DALI could not
            decode, or the first odd-sized frame.
    """
    if not chunks:
        raise CheckError("avi: no video frames in the movi list")
    cut = next((i for i, (offset, size) in enumerate(chunks)
                if not is_whole_jpeg(data[offset:offset + size])), None)
    if cut is not None:
        raise CheckError(f"avi: frame {cut} is not a whole JPEG (its markers are cut short or "
                         "overwritten)")
    pipe, sizes = _jpeg_pipeline(), []
    for start in range(0, len(chunks), JPEG_BATCH):
        batch = [data[offset:offset + size] for offset, size in chunks[start:start + JPEG_BATCH]]
        try:
            pipe.feed_input("data", batch)
            (out,) = pipe.run()
        except Exception as err:  # DALI: RuntimeError/IndexError; the pipeline is dead after it
            # No frame-by-frame search: every failed decode brings DALI closer to a segfault
            # (a crashed worker is retried alone by the runner, but costs a pool restart).
            _jpeg_pipeline.cache_clear()
            raise CheckError(f"dali: JPEG frames {start}-{start + len(batch) - 1} do not decode "
                             f"({_dali_error(err)})") from err
        sizes += [tuple(out[i].shape()[:2]) for i in range(len(batch))]
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        raise CheckError(f"dali: frame {odd} is {sizes[odd][1]}x{sizes[odd][0]}, frame 0 "
                         f"{sizes[0][1]}x{sizes[0][0]}")
    return len(sizes), *sizes[0]


def dali_frames(data: bytes) -> tuple[int, int, int]:
    """Decodes an encoded clip with DALI's CPU video decoder.

    Returns:
        (frames, height, width) of what DALI returned.

    Raises:
        CheckError: with DALI's message.
    """
    import numpy as np

    pipe = _dali_pipeline()
    try:
        pipe.feed_input("data", [np.frombuffer(data, np.uint8)])
        (out,) = pipe.run()
        frames, height, width, _ = out[0].shape()
    except Exception as err:  # DALI raises RuntimeError/IndexError; the pipeline is dead after it
        _dali_pipeline.cache_clear()
        raise CheckError(f"dali: {_dali_error(err)}") from err
    return int(frames), int(height), int(width)


def _dali_agrees(path: Path, meta: dict) -> dict:
    frames, height, width = dali_frames(path.read_bytes())
    if (frames, height, width) != (meta["frames"], meta["height"], meta["width"]):
        raise CheckError(f"dali: decoded {frames} frames of {width}x{height}, ffmpeg "
                         f"{meta['frames']} of {meta['width']}x{meta['height']}")
    return meta


def _check_mjpeg(path: Path, timeout: float) -> dict | CheckError:
    data = np.fromfile(path, np.uint8)
    try:
        chunks, rate = avi_chunks(data), avi_frame_rate(data)
    except ValueError:  # the pipeline would fall back to the video decoder: check that one
        return _check_decoded([path], "mjpeg", timeout)[0]
    try:
        frames, height, width = dali_jpeg_frames(data, chunks)
    except CheckError as err:
        return err
    return {"frames": frames, "fps": round(rate, 3), "width": width, "height": height,
            "codec": "mjpeg"}


def check_outputs(paths: list[Path], codec: str, timeout: float = 600.0) -> list[dict | CheckError]:
    """Decode-checks transcoded clips; per clip, its ``meta`` (without source) or the error.

    Args:
        paths: the clips, all in ``codec``'s container.
        codec: the codec they were encoded with.
        timeout: seconds for one ffmpeg decode.
    """
    if codec == "mjpeg":
        return [_check_mjpeg(Path(p), timeout) for p in paths]
    return _check_decoded(paths, codec, timeout)


def _check_decoded(paths: list[Path], codec: str, timeout: float) -> list[dict | CheckError]:
    """ffmpeg reads (and for H.264 decodes) every clip; DALI's video decoder then decodes the
    codecs it handles."""
    if not paths:
        return []
    try:
        metas = ffmpeg_decode(paths, codec, timeout)
    except CheckError as err:
        if len(paths) == 1:
            return [err]
        return [_check_decoded([p], codec, timeout)[0] for p in paths]
    if codec not in DALI_CODECS:
        return metas
    checked: list[dict | CheckError] = []
    for path, meta in zip(paths, metas, strict=True):
        try:
            checked.append(_dali_agrees(path, meta))
        except CheckError as err:
            checked.append(err)
    return checked


def check_output(path: Path, codec: str, timeout: float = 600.0) -> dict:
    """Decode-checks one clip; returns its ``meta`` (without source).

    Raises:
        CheckError: which check failed and the decoder's own message.
    """
    (meta,) = check_outputs([Path(path)], codec, timeout)
    if isinstance(meta, CheckError):
        raise meta
    return meta
