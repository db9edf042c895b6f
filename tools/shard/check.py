"""Probe and decode-check a transcoded clip before it may enter a shard.

One sample DALI cannot decode kills a whole DALI pipeline, so every output is decoded once
here, with the decoder family the training pipeline uses: DALI's CPU ``decoders.video`` for
VP9 and MJPEG, and a full ffmpeg decode for H.264 (DALI's CPU decoder has no H.264; on a GPU
the pipeline uses NVDEC). The frame count written to ``meta`` is the count the decoder gave.
"""

from __future__ import annotations

import functools
import json
import subprocess
from fractions import Fraction
from pathlib import Path

from tools.shard.transcode import CODECS, ffmpeg_message

FFPROBE_CODEC = {"h264": "h264", "vp9": "vp9", "mjpeg": "mjpeg"}
DALI_CODECS = ("vp9", "mjpeg")


class CheckError(RuntimeError):
    """The output failed a check; the message says which one and why."""


def probe(path: Path, codec: str, timeout: float = 600.0, count: bool = True) -> dict:
    """Reads the stream facts of ``path`` with ffprobe; with ``count``, decodes every frame.

    Returns:
        dict with frames (-1 without ``count``), fps, width, height, codec.

    Raises:
        CheckError: ffprobe failed, found no video, the wrong codec or no frames.
    """
    command = ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-f", CODECS[codec].muxer,
               *(["-count_frames"] if count else []), "-select_streams", "v:0", "-show_entries",
               "stream=codec_name,width,height,nb_read_frames,r_frame_rate", "-of", "json",
               f"file:{Path(path).absolute()}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise CheckError(f"ffprobe: timed out after {timeout:.0f} s") from err
    if result.returncode != 0:
        raise CheckError(f"ffprobe: {ffmpeg_message(result.stderr, path)}")
    streams = json.loads(result.stdout or "{}").get("streams", [])
    if not streams:
        raise CheckError("ffprobe: no video stream in the output")
    stream = streams[0]
    if stream.get("codec_name") != FFPROBE_CODEC[codec]:
        raise CheckError(f"ffprobe: output codec is {stream.get('codec_name')}, expected {codec}")
    frames = int(stream.get("nb_read_frames") or 0) if count else -1
    if count and frames < 1:
        raise CheckError("ffprobe: the output has no decodable frames")
    return {"frames": frames, "fps": float(Fraction(stream["r_frame_rate"])),
            "width": int(stream["width"]), "height": int(stream["height"]), "codec": codec}


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
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise CheckError(f"dali: {'; '.join(lines[:2]) or type(err).__name__}") from err
    return int(frames), int(height), int(width)


def check_output(path: Path, codec: str, timeout: float = 600.0) -> dict:
    """Probes and decode-checks one transcoded clip; returns its ``meta`` (without source).

    Raises:
        CheckError: which check failed and the tool's own message.
    """
    if codec not in DALI_CODECS:
        return probe(path, codec, timeout)  # the full ffmpeg decode is the check
    meta = probe(path, codec, timeout, count=False)
    frames, height, width = dali_frames(Path(path).read_bytes())
    if frames < 1 or (height, width) != (meta["height"], meta["width"]):
        raise CheckError(f"dali: decoded {frames} frames of {width}x{height}, ffprobe says "
                         f"{meta['width']}x{meta['height']}")
    return {**meta, "frames": frames}
