"""vtp synth OUT_DIR: a seeded, deterministic WebVid-format captioned video dataset.

Writes OUT_DIR/results.csv (WebVid columns), OUT_DIR/videos/{page_dir}/{videoid}.mp4 (H.264),
OUT_DIR/ground_truth.parquet (every injected defect and the clean caption, per row) and
OUT_DIR/test.json (held-out retrieval split, MSR-VTT style) and OUT_DIR/synth.json (the
settings, the preset's parameters and oracle scores of the held-out split). The same seed
gives the same bytes and rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.synth.dataset import SynthConfig, generate
from tools.synth.presets import PRESETS, Preset

__all__ = ["PRESETS", "Preset", "SynthConfig", "generate", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("out_dir", type=Path, help="folder to write the dataset into")
    parser.add_argument("--num-clips", type=int, default=defaults.num_clips,
                        help="training rows in results.csv (default %(default)s)")
    parser.add_argument("--num-test", type=int, default=None,
                        help="held-out test clips (default: num-clips // 4)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    parser.add_argument("--defect-rate", type=float, default=defaults.defect_rate,
                        help="share of rows with a caption defect; half as many broken files "
                             "(default %(default)s)")
    parser.add_argument("--fps", type=int, default=defaults.fps, help="default %(default)s")
    parser.add_argument("--width", type=int, default=defaults.width, help="default %(default)s")
    parser.add_argument("--height", type=int, default=defaults.height, help="default %(default)s")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=defaults.preset,
                        help="what clips show and how captions word it: hard (small objects, "
                             "clutter, noise, varied wording; the first generator) or demo (large "
                             "objects, plain backgrounds, one wording) (default %(default)s)")
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="processes rendering in parallel "
                             "(default: all cores, %(default)s here)")


def run(args: argparse.Namespace) -> int:
    from tools.errors import UsageError
    from tools.folders import make_output_folder

    try:
        config = SynthConfig(
            num_clips=args.num_clips, num_test=args.num_test, seed=args.seed,
            defect_rate=args.defect_rate, fps=args.fps, width=args.width, height=args.height,
            workers=args.workers, preset=args.preset,
        )
        make_output_folder(args.out_dir, "OUT_DIR")
    except ValueError as err:
        raise UsageError(str(err)) from err
    summary = generate(config, args.out_dir)
    print(json.dumps(summary, indent=2))
    return 0
