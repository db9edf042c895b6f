"""vtp shard: transcode, check and write videos into MDS shards and/or WebDataset tars.

Input is a manifest (WebVid CSV, or the parquet of `vtp clean`/`vtp subset`; rows with a
drop_reason are skipped) with videos at ROOT/{page_dir}/{videoid}.mp4, or a folder of
video2dataset tars (--v2d-tars). Every output clip is probed and decoded once before it is
written. Writes OUT/mds/ (index.json + shards), OUT/wds/ (*.tar + *.idx) and
OUT/manifest.parquet (one row per input: key, status ok|failed, reason, bytes, seconds, shard).
Rerunning into the same OUT resumes: finished shards are kept, unfinished ones redone;
--retry-failed also transcodes the failed inputs again, into appended shards. OUT must be new,
empty or an earlier run's. Exit status: 0 done, 1 unfinished or every input failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tools.shard.inputs import InputError, WorkItem, manifest_items, mark_duplicates, v2d_items
from tools.shard.transcode import CODECS, TranscodeOptions
from tools.shard.writers import FORMATS

__all__ = ["ShardConfig", "TranscodeOptions", "WorkItem", "load_items", "shard",
           "add_arguments", "run"]


def __getattr__(name: str):
    """``shard`` and ``ShardConfig`` load on first use: pool workers import this package
    too, and need none of the run's imports (pyarrow, tqdm)."""
    if name in ("shard", "ShardConfig", "SettingsMismatch"):
        from tools.shard import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, nargs="?", help="manifest .csv or .parquet")
    parser.add_argument("--video-root", type=Path, help="folder holding {page_dir}/{videoid}.mp4")
    parser.add_argument("--v2d-tars", type=Path, help="folder of video2dataset tars (instead of a manifest)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: new, empty, or an earlier run's (resumed)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="both",
                        help="shard formats (default %(default)s)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264",
                        help="h264 (mp4, GPU decode), vp9 (webm) or mjpeg (avi) for CPU decode "
                             "(default %(default)s)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: keep)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="output short side in pixels (default: keep)")
    parser.add_argument("--start", type=float, default=0.0,
                        help="clip window start, seconds (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="clip window length, seconds (default: to the end)")
    parser.add_argument("--gop", type=int, default=32,
                        help="key frame interval in frames (default %(default)s)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (h264 only; default %(default)s)")
    parser.add_argument("--crf", type=int, default=None,
                        help="constant quality, h264 0-51 / vp9 0-63 (default: 23 / 32)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: all cores, %(default)s here)")
    parser.add_argument("--shard-size", type=int, default=256,
                        help="inputs per shard group, the unit of resume (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8,
                        help="samples per pool task, decode-checked by one ffmpeg (default %(default)s)")
    parser.add_argument("--num-workers", type=int, default=1,
                        help="machines sharing the input (default %(default)s)")
    parser.add_argument("--worker-index", type=int, default=0,
                        help="this machine's part, 0-based (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per ffmpeg call; not part of the run's settings, so a "
                             "rerun may raise it (default %(default)s)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="also transcode again every input that failed in an earlier run "
                             "(new shards are appended; each retried row replaces its failed row)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_items(manifest: Path | None, video_root: Path | None, v2d_tars: Path | None) -> tuple[list[WorkItem], int]:
    """The work items of a manifest + video root, or of a folder of video2dataset tars.

    Returns:
        (items, rows dropped upstream by a drop_reason).

    Raises:
        InputError: neither or both inputs given, or an unusable input.
    """
    if (manifest is None) == (v2d_tars is None):
        raise InputError("give either MANIFEST with --video-root, or --v2d-tars")
    if v2d_tars is not None:
        return mark_duplicates(v2d_items(v2d_tars)), 0
    if video_root is None or not video_root.is_dir():
        raise InputError(f"--video-root must be an existing folder, got {video_root}")
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} does not exist")
    items, dropped = manifest_items(manifest, video_root)
    return mark_duplicates(items), dropped


def run(args: argparse.Namespace) -> int:
    from tools.errors import UsageError
    from tools.shard.folder import check_out
    from tools.shard.runner import SettingsMismatch, ShardConfig, shard

    try:
        options = TranscodeOptions(
            codec=args.codec, fps=args.fps, short_side=args.short_side, start=args.start,
            max_seconds=args.max_seconds, gop=args.gop, preset=args.preset, crf=args.crf,
            timeout=args.timeout)
        config = ShardConfig(
            out=args.out, format=args.format, transcode=options, workers=args.workers,
            shard_size=args.shard_size, num_workers=args.num_workers,
            worker_index=args.worker_index, progress=not args.no_progress, batch=args.batch,
            retry_failed=args.retry_failed)
        check_out(args.out)
        items, dropped = load_items(args.manifest, args.video_root, args.v2d_tars)
        summary = shard(items, config)
    except (ValueError, InputError, SettingsMismatch) as err:
        raise UsageError(str(err)) from err
    summary["dropped_upstream"] = dropped
    print(json.dumps(summary, indent=1))
    print(f"shard: {summary['inputs']} inputs = {summary['ok']} ok + {summary['failed']} failed"
          f" ({dropped} rows skipped for their drop_reason); manifest: {args.out / 'manifest.parquet'}")
    if not summary["complete"]:
        return 1
    if summary["inputs"] and not summary["ok"]:
        print("shard: every input failed; see the reasons above", file=sys.stderr)
        return 1
    if summary["failed"] and not args.retry_failed:
        print(f"shard: rerun with --retry-failed to try the {summary['failed']} failed inputs "
              "again", file=sys.stderr)
    return 0
