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
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.storage import is_remote, path_or_url
from tools.shard.array import resolve_part
from tools.shard.inputs import InputError, WorkItem, manifest_items, mark_duplicates, v2d_items
from tools.shard.transcode import CODECS, TranscodeOptions
from tools.shard.writers import FORMATS

__all__ = ["ShardConfig", "TranscodeOptions", "WorkItem", "load_items", "shard",
           "shard_items", "shard_manifest", "add_arguments", "run"]


def __getattr__(name: str):
    """``shard`` and ``ShardConfig`` load on first use: pool workers import this package
    too, and need none of the run's imports (pyarrow, tqdm)."""
    if name in ("shard", "ShardConfig", "SettingsMismatch"):
        from tools.shard import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=path_or_url, nargs="?",
                        help="manifest .csv or .parquet (a file, or s3://bucket/key)")
    parser.add_argument("--video-root", type=path_or_url,
                        help="folder or s3://bucket/prefix holding {page_dir}/{videoid}.mp4")
    parser.add_argument("--v2d-tars", type=Path,
                        help="folder of video2dataset tars (instead of a manifest)")
    parser.add_argument("--out", type=path_or_url, required=True,
                        help="output folder (new, empty, or an earlier run's, resumed), or "
                             "s3://bucket/prefix (written through --stage)")
    parser.add_argument("--stage", type=Path, default=None,
                        help="local folder for a remote --out's staging, in a subfolder named "
                             "after the URL (default: the system temp folder); finished groups "
                             "keep only their index files there")
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
    parser.add_argument("--gop", type=int, default=None,
                        help="key frame interval in frames (default 32)")
    parser.add_argument("--frame-step", type=int, default=None,
                        help="keep every N-th frame (shard at the training stride; default 1)")
    parser.add_argument("--preset", default="veryfast",
                        help="x264 preset (h264 only; default %(default)s)")
    parser.add_argument("--crf", type=int, default=None,
                        help="constant quality, h264 0-51 / vp9 0-63 (default: 23 / 32)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: all cores, %(default)s here)")
    parser.add_argument("--shard-size", type=int, default=256,
                        help="inputs per shard group, the unit of resume (default %(default)s)")
    parser.add_argument("--batch", type=int, default=8,
                        help="samples per pool task, decode-checked by one ffmpeg "
                             "(default %(default)s)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="machines sharing the input (default: the array job's size, else 1)")
    parser.add_argument("--worker-index", type=int, default=None,
                        help="this machine's part, 0-based (default: SLURM_ARRAY_TASK_ID or "
                             "JOB_COMPLETION_INDEX, else 0)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per ffmpeg call; not part of the run's settings, so a "
                             "rerun may raise it (default %(default)s)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="also transcode again every input that failed in an earlier run "
                             "(new shards are appended; each retried row replaces its failed row)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_items(manifest: Path | None, video_root: Path | str | None,
               v2d_tars: Path | None) -> tuple[list[WorkItem], int]:
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
    locate = None
    if is_remote(video_root):  # hook: videos in a bucket, downloaded by the pool tasks
        from pipeline.storage import check_access
        from tools.shard.remote import locate

        check_access(video_root)
    elif video_root is None or not video_root.is_dir():
        raise InputError(f"--video-root must be an existing folder, got {video_root}")
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} does not exist")
    items, dropped = manifest_items(manifest, video_root, locate)
    return mark_duplicates(items), dropped


def shard_items(items: list[WorkItem], out: Path, options: TranscodeOptions, workers: int,
                progress: bool = True) -> dict:
    """Shards ``items`` into MDS shards under ``out`` (resumable: a finished run is reused).

    Returns:
        ``shard``'s summary (inputs, ok, failed, bytes, complete, ...).
    """
    from tools.shard.runner import ShardConfig, shard

    config = ShardConfig(out=out, format="mds", transcode=options, workers=workers,
                         progress=progress)
    return shard(items, config)


def shard_manifest(manifest: Path, video_root: Path, out: Path, codec: str,
                   short_side: int | None, workers: int) -> dict:
    """In-process ``vtp shard MANIFEST --video-root ROOT --format mds --codec --short-side``.

    Returns:
        ``shard``'s summary, plus ``dropped_upstream`` (rows skipped for their drop_reason).

    Raises:
        InputError: an unusable manifest or video root.
    """
    items, dropped = load_items(manifest, video_root, None)
    options = TranscodeOptions(codec=codec, short_side=short_side)
    return {**shard_items(items, out, options, workers), "dropped_upstream": dropped}


def run(args: argparse.Namespace) -> int:
    from tools.errors import UsageError
    from tools.shard.folder import check_out
    from tools.shard.runner import SettingsMismatch, ShardConfig, shard

    remote = None
    try:
        if is_remote(args.out):  # hook: the run writes a local stage mirrored to the bucket
            from tools.shard.remote import RemoteOut, default_stage

            remote = RemoteOut(args.out, default_stage(args.out, args.stage))
            remote.pull()
        manifest = args.manifest
        if is_remote(manifest):
            from tools.shard.remote import fetch_manifest

            scratch = tempfile.mkdtemp(prefix="vtp-manifest-")
            manifest = fetch_manifest(manifest, Path(scratch))
        part = resolve_part(args.num_workers, args.worker_index, os.environ)
        print(f"shard: part {part.index} of {part.count} ({part.source})", file=sys.stderr)
        from tools.shard.settings import chosen_settings

        chosen = chosen_settings(vars(args), getattr(args, "recipe_settings", None))
        options = TranscodeOptions(
            codec=args.codec, fps=args.fps, start=args.start, max_seconds=args.max_seconds,
            preset=args.preset, crf=args.crf, timeout=args.timeout, **chosen)
        config = ShardConfig(
            out=remote.stage if remote else args.out, format=args.format, transcode=options,
            workers=args.workers, shard_size=args.shard_size, num_workers=part.count,
            worker_index=part.index, progress=not args.no_progress, batch=args.batch,
            retry_failed=args.retry_failed, on_group=remote.push_group if remote else None)
        check_out(config.out)
        try:
            items, dropped = load_items(manifest, args.video_root, args.v2d_tars)
        finally:
            if is_remote(args.manifest):
                shutil.rmtree(scratch, ignore_errors=True)
        summary = shard(items, config)
        if remote:
            remote.push_final()
            summary["out"] = args.out
    except (ValueError, InputError, SettingsMismatch) as err:
        raise UsageError(str(err)) from err
    summary["dropped_upstream"] = dropped
    print(json.dumps(summary, indent=1))
    print(f"shard: {summary['inputs']} inputs = {summary['ok']} ok + {summary['failed']} failed"
          f" ({dropped} rows skipped for their drop_reason); manifest: {args.out}/manifest.parquet")
    if not summary["complete"]:
        return 1
    if summary["inputs"] and not summary["ok"]:
        print("shard: every input failed; see the reasons above", file=sys.stderr)
        return 1
    if summary["failed"] and not args.retry_failed:
        print(f"shard: rerun with --retry-failed to try the {summary['failed']} failed inputs "
              "again", file=sys.stderr)
    return 0
