"""vtp experiment: SimVTP's claims in miniature, a grid of short pretraining runs on synthetic data.

One-factor axes around one baseline: (a) training data 10% / 30% / 100% (nested `vtp subset`
subsets) at equal compute and (a') at equal epochs, (b) video mask ratio 0.75 / 0.9 / 0.95,
(c) text mask probability 0.15 / 0.45 / 0.75, (d) losses MVM+MLM, +VTC, +VTC+VTM, and (e) the
baseline on a second synthetic dataset (data variance next to seed variance). Each distinct
setting is trained once per seed through the real stack (recipe -> Composer) and evaluated
zero-shot on its dataset's held-out split (`evaluation.evaluate`). The baseline is the
recipe's own mask ratios, all data, all losses; cells that share it share its runs. Writes
OUT/report.md (table, verdicts on the paper's claims, setup), OUT/*.png (one plot per axis),
OUT/results.json and OUT/runs/RUN_ID.json per run. Rerunning skips finished runs; --publish
DIR also writes DIR/EXPERIMENTS.md and DIR/experiments/*.png (the committed copy).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

__all__ = ["add_arguments", "run", "run_experiment", "ExperimentConfig"]

from commands.experiment.config import ExperimentConfig
from commands.experiment.main import run_experiment


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ExperimentConfig()
    parser.add_argument("--recipe", default=d.recipe, help="training recipe (default %(default)s)")
    parser.add_argument("--out", type=Path, default=d.out,
                        help="report folder (default %(default)s)")
    parser.add_argument("--work", type=Path, default=d.work,
                        help="data and checkpoint folder (default %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, d.seeds)),
                        help="training seeds per cell (default %(default)s)")
    parser.add_argument("--max-duration", default=d.max_duration,
                        help="training length of each run (default %(default)s; 'recipe' for "
                             "the recipe's)")
    parser.add_argument("--axes", default=",".join(d.axes),
                        help="axes to run (default %(default)s)")
    parser.add_argument("--fractions", default=",".join(map(str, d.fractions)),
                        help="training-set shares of the data axis (default %(default)s)")
    parser.add_argument("--num-clips", type=int, default=d.num_clips,
                        help="synthetic training rows (default %(default)s)")
    parser.add_argument("--num-test", type=int, default=d.num_test,
                        help="held-out test clips (default %(default)s)")
    parser.add_argument("--gallery-size", type=int, default=d.gallery_size,
                        help="rank each held-out query within a disjoint gallery of about this "
                             "many clips (default %(default)s)")
    parser.add_argument("--data-seed", type=int, default=d.data_seed)
    parser.add_argument("--preset", default=d.preset,
                        help="`vtp synth` preset of the dataset (default %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for synth/clean/shard (default: all cores)")
    parser.add_argument("--jobs", type=int, default=d.jobs,
                        help="runs trained at once, each in its own process (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra recipe override for every run (repeatable)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep each run's checkpoint after its evaluation")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its runs only")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from finished runs; train nothing")
    parser.add_argument("--publish", type=Path, default=None, metavar="DIR",
                        help="also write DIR/EXPERIMENTS.md and DIR/experiments/*.png")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError

    try:
        config = ExperimentConfig(
            recipe=args.recipe, out=args.out, work=args.work, seeds=_ints(args.seeds),
            max_duration=None if args.max_duration == "recipe" else args.max_duration,
            axes=tuple(a.strip() for a in args.axes.split(",") if a.strip()),
            fractions=_floats(args.fractions), num_clips=args.num_clips, num_test=args.num_test,
            gallery_size=args.gallery_size,
            data_seed=args.data_seed, preset=args.preset, workers=args.workers, jobs=args.jobs,
            overrides=tuple(args.overrides),
            keep_checkpoints=args.keep_checkpoints, publish=args.publish,
            progress=not args.no_progress)
    except ValueError as err:
        raise UsageError(str(err)) from err
    start = time.perf_counter()
    summary = run_experiment(config, dry_run=args.dry_run, report_only=args.report_only)
    if args.dry_run:
        return 0
    print(f"experiment: {summary['runs']} runs ({summary['skipped']} already done, "
          f"{summary['ran']} run now, {len(summary['failed'])} failed) in "
          f"{time.perf_counter() - start:.0f} s; report {summary['report']}")
    if summary["failed"]:
        print("failed runs (rerun to retry): " + ", ".join(summary["failed"]))
    return 1 if summary["failed"] else 0
