"""A pool task: transcode a few samples, decode-check them together, hand back bytes or reasons."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.shard.check import CheckError, check_outputs
from tools.shard.inputs import WorkItem
from tools.shard.settings import shard_meta
from tools.shard.source import Source, SourceError, inspect, short_decode
from tools.shard.transcode import CODECS, TranscodeError, TranscodeOptions, transcode


@dataclass
class Result:
    """What a sample became: encoded bytes and meta when ok, a reason when failed."""

    key: str
    caption: str
    source: str
    status: str = "failed"
    reason: str = ""
    data: bytes = b""
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def _input_file(item: WorkItem, folder: Path) -> Path:
    """The file ffmpeg reads: the video itself, or a copy of its bytes out of a tar."""
    if item.path.startswith("s3://"):  # hook: a remote video is downloaded first
        from tools.shard.remote import fetch_input

        return fetch_input(item, folder)
    if item.offset is None:
        return Path(item.path)
    copy = folder / "input.mp4"
    with open(item.path, "rb") as tar, open(copy, "wb") as out:
        tar.seek(item.offset)
        remaining = item.size
        while remaining:
            chunk = tar.read(min(remaining, 1 << 20))
            if not chunk:
                raise OSError("truncated tar: it ends inside the video member")
            out.write(chunk)
            remaining -= len(chunk)
    return copy


def _transcode(item: WorkItem, options: TranscodeOptions, folder: Path) -> tuple[Path, Source]:
    folder.mkdir()
    src = _input_file(item, folder)
    source = inspect(src, options.start, options.timeout)
    dst = folder / f"output.{CODECS[options.codec].ext}"
    transcode(src, dst, options, source.demuxer)
    return dst, source


def _check(done: list[tuple[Result, Path, Source]], options: TranscodeOptions) -> None:
    start = time.perf_counter()
    checked = check_outputs([path for _, path, _ in done], options.codec, options.timeout)
    share = (time.perf_counter() - start) / max(len(done), 1)
    for (result, path, source), meta in zip(done, checked, strict=True):
        result.seconds += share
        if isinstance(meta, CheckError):
            result.reason = str(meta)
            continue
        short = short_decode(meta["frames"], meta["fps"], source, options.start,
                             options.max_seconds)
        if short:
            result.reason = short
        else:
            result.status, result.data = "ok", path.read_bytes()
            extra = shard_meta(path, options.codec, options.frame_step)
            result.meta = {**meta, **extra, "source": result.source}


def process_batch(items: list[WorkItem], options: TranscodeOptions,
                  tmp_root: str | None = None) -> list[Result]:
    """Transcodes each sample, then decode-checks all outputs at once; never raises for a bad
    sample.

    Args:
        items: a few consecutive samples.
        options: the output format.
        tmp_root: where scratch files go (removed before returning).
    """
    folder = Path(tempfile.mkdtemp(prefix="vtp-shard-", dir=tmp_root))
    results, done = [], []
    try:
        for i, item in enumerate(items):
            start = time.perf_counter()
            result = Result(item.key, item.caption, item.source, reason=item.error or "")
            if item.error is None:
                try:
                    done.append((result, *_transcode(item, options, folder / str(i))))
                except (SourceError, TranscodeError, OSError) as err:
                    result.reason = str(err)
                except Exception as err:  # one odd file must not take its batch down with it
                    result.reason = f"unexpected error: {type(err).__name__}: {err}"
            result.seconds = time.perf_counter() - start
            results.append(result)
        _check(done, options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results
