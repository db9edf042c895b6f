"""One sample's work, run in a pool process: transcode, check, hand back bytes or a reason."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.shard.check import CheckError, check_output
from tools.shard.inputs import WorkItem
from tools.shard.transcode import CODECS, TranscodeError, TranscodeOptions, transcode


@dataclass
class Result:
    """What a sample became: encoded bytes and meta when ok, a reason when failed."""

    key: str
    caption: str
    status: str
    reason: str = ""
    data: bytes = b""
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def _input_file(item: WorkItem, folder: Path) -> Path:
    """The file ffmpeg reads: the video itself, or a copy of its bytes out of a tar."""
    if item.offset is None:
        return Path(item.path)
    copy = folder / "input.mp4"
    with open(item.path, "rb") as tar, open(copy, "wb") as out:
        tar.seek(item.offset)
        out.write(tar.read(item.size))
    return copy


def _encode(item: WorkItem, options: TranscodeOptions, folder: Path) -> tuple[bytes, dict]:
    src = _input_file(item, folder)
    if src.stat().st_size == 0:
        raise TranscodeError("empty file: 0 bytes")
    dst = folder / f"output.{CODECS[options.codec].ext}"
    transcode(src, dst, options)
    meta = check_output(dst, options.codec, options.timeout)
    return dst.read_bytes(), {**meta, "source": item.source}


def process(item: WorkItem, options: TranscodeOptions, tmp_root: str | None = None) -> Result:
    """Transcodes and checks one sample; never raises for a bad sample.

    Args:
        item: the sample.
        options: the output format.
        tmp_root: where scratch files go (removed before returning).
    """
    start = time.perf_counter()
    result = Result(item.key, item.caption, "failed", reason=item.error or "")
    if item.error is None:
        folder = Path(tempfile.mkdtemp(prefix="vtp-shard-", dir=tmp_root))
        try:
            result.data, result.meta = _encode(item, options, folder)
            result.status = "ok"
        except (TranscodeError, CheckError, OSError) as err:
            result.reason = str(err)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result
