"""vtp shard: transcode, check and write videos into MDS shards and/or WebDataset tars.

Input is a manifest (WebVid CSV, or the parquet of `vtp clean`/`vtp subset`; rows with a
drop_reason are skipped) with videos at ROOT/{page_dir}/{videoid}.mp4, or a folder of
video2dataset tars (--v2d-tars). Every output clip is probed and decoded once before it is
written. Writes OUT/mds/ (index.json + shards), OUT/wds/ (*.tar + *.idx) and
OUT/manifest.parquet (one row per input: key, status ok|failed, reason, bytes, seconds, shard).
Rerunning into the same OUT resumes: finished shards are kept, unfinished ones redone.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--format", choices=sorted(FORMATS), default="both")
    parser.add_argument("--codec", choices=sorted(CODECS), default="h264",
                        help="h264 (mp4, GPU decode), vp9 (webm) or mjpeg (avi) for CPU decode")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: keep)")
    parser.add_argument("--short-side", type=int, default=None, help="output short side in pixels")
    parser.add_argument("--start", type=float, default=0.0, help="clip window start, seconds")
    parser.add_argument("--max-seconds", type=float, default=None, help="clip window length, seconds")
    parser.add_argument("--gop", type=int, default=None, help="key frame interval in frames (default 32)")
    parser.add_argument("--frame-step", type=int, default=None,
                        help="keep every N-th frame (shard at the training stride; default 1)")
    parser.add_argument("--for-recipe", default=None, metavar="RECIPE",
                        help="take --frame-step, --gop and --short-side from a recipe's data "
                             "section (flags given explicitly win)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (h264 only)")
    parser.add_argument("--crf", type=int, default=None, help="constant quality for h264/vp9")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: all cores)")
    parser.add_argument("--shard-size", type=int, default=256, help="inputs per shard group (unit of resume)")
    parser.add_argument("--batch", type=int, default=8,
                        help="samples per pool task, decode-checked by one ffmpeg (default %(default)s)")
    parser.add_argument("--num-workers", type=int, default=1, help="machines sharing the input")
    parser.add_argument("--worker-index", type=int, default=0, help="this machine's part, 0-based")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per ffmpeg call")
    parser.add_argument("--no-progress", action="store_true")


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
    from tools.cli import UsageError
    from tools.shard.runner import SettingsMismatch, ShardConfig, shard

    try:
        from tools.shard.settings import chosen_settings

        chosen = chosen_settings(vars(args), args.for_recipe)
        options = TranscodeOptions(
            codec=args.codec, fps=args.fps, start=args.start, max_seconds=args.max_seconds,
            preset=args.preset, crf=args.crf, timeout=args.timeout, **chosen)
        config = ShardConfig(
            out=args.out, format=args.format, transcode=options, workers=args.workers,
            shard_size=args.shard_size, num_workers=args.num_workers,
            worker_index=args.worker_index, progress=not args.no_progress, batch=args.batch)
        items, dropped = load_items(args.manifest, args.video_root, args.v2d_tars)
        summary = shard(items, config)
    except (ValueError, InputError, SettingsMismatch) as err:
        raise UsageError(str(err)) from err
    summary["dropped_upstream"] = dropped
    print(json.dumps(summary, indent=1))
    print(f"shard: {summary['inputs']} inputs = {summary['ok']} ok + {summary['failed']} failed"
          f" ({dropped} rows skipped for their drop_reason); manifest: {args.out / 'manifest.parquet'}")
    return 0 if summary["complete"] else 1
