"""Small ffprobe helpers shared by the tools and the tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


class ProbeError(RuntimeError):
    """ffprobe could not read a video stream; the message carries ffprobe's own words."""


def probe_frames(path: Path | str) -> dict:
    """Decodes every frame of the first video stream and returns its codec, size and frame count.

    The ``file:`` prefix stops ffprobe from reading a name such as ``-x.mp4`` or ``a:b.mp4`` as
    an option or a protocol.
    """
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames,r_frame_rate",
         "-of", "json", f"file:{Path(path).resolve()}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ProbeError(result.stderr.strip() or f"ffprobe exited with {result.returncode}")
    streams = json.loads(result.stdout or "{}").get("streams", [])
    if not streams:
        raise ProbeError("no video stream")
    stream = streams[0]
    stream["nb_read_frames"] = int(stream.get("nb_read_frames", 0))
    return stream
