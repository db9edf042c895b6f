"""vtp bench pipeline SHARD_DIR: is the data loader the bottleneck, and is it the fastest?

Runs the whole training pipeline (frame sampling, DALI decode + crop/resize/flip/normalise,
video masks, tokenizer + MLM masks) over the shards and reports samples/s next to the bare
decoder and the peer loaders, measured in the same run (benchmarks/measure.py says how).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

BENCHMARKS = ("pipeline",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS, help="what to benchmark")
    parser.add_argument("shard_dir", type=Path,
                        help="`vtp shard` output (with mds/) or an MDS folder")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="decode device (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="DALI threads per pipeline (default: all cores, %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="samples per batch (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="output height and width (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="passes over the shards (each draws new frames); the first batch "
                             "of every process is warm-up and not counted (default: %(default)s)")
    parser.add_argument("--interpolation", choices=("nearest", "linear", "cubic"), default="linear",
                        help="resize filter (data.interpolation); nearest is far cheaper on a CPU "
                             "(default: %(default)s)")
    parser.add_argument("--uint8", action="store_true",
                        help="hand over uint8 video, normalise after (data.normalize_on_device)")
    parser.add_argument("--resize-backend", choices=("auto", "dali", "torch"), default="auto",
                        help="CPU crop/resize in DALI or in torch (data.resize_backend; auto: "
                             "torch on the CPU for bilinear)")
    parser.add_argument("--key-frame-windows", action="store_true",
                        help="dense windows start on key frames (data.key_frame_windows)")
    parser.add_argument("--no-peers", action="store_true", help="measure vtp alone")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError
    from recipes.preflight import shard_problem, shard_samples

    for flag, least in (("threads", 1), ("batch_size", 1), ("epochs", 1), ("workers", 0),
                        ("image_size", 1)):
        if getattr(args, flag) < least:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= {least}, "
                             f"got {getattr(args, flag)}")
    problem = shard_problem(args.shard_dir, "mds")  # the limit reads the clips from MDS
    if problem:
        raise UsageError(problem)
    samples = shard_samples(args.shard_dir, "mds")
    if args.batch_size > samples:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {samples} samples "
                         f"in {args.shard_dir}")
    from benchmarks.measure import measure, report
    from pipeline import DataConfig

    try:  # e.g. --resize-backend torch with another interpolation
        cfg = DataConfig(path=str(args.shard_dir), device=args.device,
                         batch_size=args.batch_size, image_size=args.image_size,
                         num_workers=args.workers, num_threads=args.threads,
                         normalize_on_device=args.uint8, interpolation=args.interpolation,
                         key_frame_windows=args.key_frame_windows,
                         resize_backend=args.resize_backend)
        result = measure(cfg, args.epochs, peers=not args.no_peers)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    hand_over = "uint8" if args.uint8 else "float32"
    print(report(result, f"{args.device}, {args.workers} workers x {args.threads} DALI threads, "
                         f"{args.interpolation} resize in {args.resize_backend}, "
                         f"{hand_over} hand-over"))
    return 0
