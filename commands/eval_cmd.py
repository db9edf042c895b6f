"""Text-video retrieval of a checkpoint: vtp eval CHECKPOINT --data TEST --out DIR.

TEST is an MSR-VTT-style json (list of video path + caption; the clips are sharded into
DIR/test-shards first) or a shard folder. Prints R@1/5/10, median and mean rank in both
directions with chance level, and writes DIR/metrics.json and DIR/retrieval.md.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile

from recipes.data_settings import DataSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `vtp train` checkpoint (e.g. .../latest-rank0.pt)")
    parser.add_argument("--data", required=True, help="test json (MSR-VTT style) or shard folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mode", choices=("zero-shot", "finetune"), default="zero-shot",
                        help="zero-shot encoder, or the dual encoder fine-tuned first "
                             "(default: %(default)s)")
    parser.add_argument("--recipe", default=None,
                        help="fine-tuning recipe (finetune-msrvtt, finetune-tiny or a YAML path): "
                             "its finetune section drives --mode finetune, its test section "
                             "sets the default views, crops and split name")
    parser.add_argument("--views", type=int, default=None,
                        help="temporal clips averaged per video (default: the recipe's, else 1)")
    parser.add_argument("--crops", type=int, default=None,
                        help="spatial crops per clip, averaged (default: the recipe's, else 1)")
    parser.add_argument("--split-name", default=None,
                        help="name of the test split in the reports, e.g. 'MSR-VTT 1k-A'")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="clips per forward pass (default: %(default)s)")
    parser.add_argument("--gallery-size", type=int, default=None, metavar="N",
                        help="rank each query within a disjoint gallery of about N clips of the "
                             "split and pool the ranks (default: one gallery of every clip)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto picks the GPU when there is one (default: %(default)s)")
    parser.add_argument("--codec", choices=("h264", "vp9", "mjpeg"), default=None,
                        help="codec for sharding json clips (default: vp9 on CPU, h264 on GPU)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="short side of sharded json clips (default: 8/7 of the model input)")
    parser.add_argument("--video-root", default=None,
                        help="folder the json's video paths start from (default: the json's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes sharding json clips (default: all cores, %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a data setting of the checkpoint ("
                             f"{', '.join(DataSettings.names())})")
    parser.add_argument("--finetune-data", default=None,
                        help="training shards for --mode finetune (overrides the recipe's)")
    parser.add_argument("--finetune-steps", type=int, default=None,
                        help="optimizer steps (overrides the recipe's max_duration)")
    parser.add_argument("--finetune-batch-size", type=int, default=None,
                        help="clips per fine-tuning step (default: the recipe's)")
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help="peak fine-tuning learning rate (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds fine-tuning (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(pairs: list[str]) -> dict:
    import yaml

    from commands.cli import UsageError

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set needs KEY=VALUE, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    _check_setting_types(settings)
    return settings


def _check_setting_types(settings: dict) -> None:
    """A value of another type than the data setting's default is a usage error, not a
    traceback deep in the pipeline (``--set stride=abc``)."""
    from commands.cli import UsageError
    from pipeline.config import DataConfig

    defaults = DataConfig()
    for key, value in settings.items():
        if not hasattr(defaults, key):
            continue  # unknown keys are named by evaluation.evaluate with the known list
        default = getattr(defaults, key)
        if isinstance(default, bool):
            fits = isinstance(value, bool)
        elif isinstance(default, int | float):
            fits = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(default, str):
            fits = isinstance(value, str)
        else:
            fits = True
        if not fits:
            kind = type(default).__name__
            raise UsageError(f"--set {key}={value!r}: {key} takes a value of type {kind} "
                             f"(default {default!r})")


def _finetune_line(out) -> str:
    """One line on the fine-tuning run, from the log it wrote."""
    summary = json.loads((out / "finetune_log.json").read_text())["summary"]
    return (f"fine-tuned the dual encoder: {summary['steps']} steps in {summary['seconds']:.0f} s, "
            f"contrastive loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} "
            f"(chance {summary['chance_loss']:.3f}); curve: {out / 'finetune_loss.png'}")


def _recipe(args: argparse.Namespace):
    """The fine-tuning recipe (or the defaults), with the command line's overrides applied."""
    from dataclasses import replace

    from recipes.finetune_config import FinetuneRecipe, load_finetune_recipe

    recipe = load_finetune_recipe(args.recipe) if args.recipe else FinetuneRecipe()
    given = {"train_data": args.finetune_data, "batch_size": args.finetune_batch_size,
             "lr": args.finetune_lr,
             "max_duration": args.finetune_steps and f"{args.finetune_steps}ba"}
    given = {k: v for k, v in given.items() if v is not None}
    test = recipe.test
    protocol = {"views": args.views or test.views, "crops": args.crops or test.crops,
                "split_name": args.split_name or test.split_name}
    return replace(recipe.finetune, **given), protocol


def _is_eval_output(out) -> bool:
    """An earlier `vtp eval` wrote here (its card, or the test shards it made first)."""
    try:
        card = json.loads((out / "run_card.json").read_text())
    except (OSError, ValueError):
        card = None
    return (isinstance(card, dict) and card.get("kind") == "eval") or (out / "test-shards").is_dir()


def _check_args(args: argparse.Namespace) -> None:
    """Usage errors found without torch: missing files, a useless json, bad numbers."""
    from pathlib import Path

    from commands.cli import UsageError

    if not Path(args.checkpoint).is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist (or is not a file)")
    if not zipfile.is_zipfile(args.checkpoint):  # torch.save and Composer write zip archives
        raise UsageError(f"checkpoint {args.checkpoint} is truncated or not a torch checkpoint "
                         "(no zip archive directory at its end)")
    data = Path(args.data)
    if not data.exists():
        raise UsageError(f"--data {args.data} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_eval_output(out):
        raise UsageError(f"--out {args.out} is a non-empty folder that is not a `vtp eval` output "
                         "(no run_card.json of an evaluation, no test-shards/); give a new or "
                         "empty folder, or the folder of an earlier evaluation")
    if args.video_root and not Path(args.video_root).is_dir():
        raise UsageError(f"--video-root {args.video_root} is not a folder")
    for flag in ("views", "crops", "batch_size", "workers", "finetune_steps",
                 "finetune_batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.finetune_data and not Path(args.finetune_data).exists():
        raise UsageError(f"--finetune-data {args.finetune_data} does not exist")
    if data.is_file() and data.suffix == ".json":
        from evaluation.eval_inputs import check_usable, test_items

        root = Path(args.video_root) if args.video_root else None
        try:
            check_usable(test_items(data, root), data, root)
        except ValueError as err:
            raise UsageError(str(err)) from err
    elif data.is_file():
        raise UsageError(f"--data {args.data} is neither a test json (.json) nor a shard folder")
    else:
        from recipes.preflight import shard_problem

        problem = shard_problem(data, "mds")
        if problem:
            raise UsageError(f"--data: {problem}")
    if args.finetune_data:
        from recipes.preflight import shard_problem

        problem = shard_problem(args.finetune_data, "mds")
        if problem:
            raise UsageError(f"--finetune-data: {problem}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from commands.cli import UsageError

    _check_args(args)  # before torch loads: a usage error answers at once
    from evaluation.evaluate import EvalConfig, evaluate_checkpoint, metrics_table, protocol_line
    from pipeline import CorruptSampleError
    from recipes.fields import RecipeError

    try:
        finetune, protocol = _recipe(args)
        if args.mode == "finetune" and not finetune.train_data:
            raise UsageError("--mode finetune needs --finetune-data TRAIN_SHARDS (or a recipe "
                             "whose finetune.train_data is set)")
        config = EvalConfig(data=args.data, out=args.out, mode=args.mode, **protocol,
                            batch_size=args.batch_size, gallery_size=args.gallery_size,
                            device=args.device, codec=args.codec,
                            short_side=args.short_side, workers=args.workers,
                            video_root=args.video_root, settings=_settings(args.set),
                            finetune=finetune, seed=args.seed)
        metrics = evaluate_checkpoint(args.checkpoint, config, progress=not args.no_progress)
    except (RecipeError, ValueError, FileNotFoundError, CorruptSampleError) as err:
        raise UsageError(str(err)) from err
    if args.mode == "finetune":
        print(_finetune_line(Path(args.out)))
    print(protocol_line(metrics))
    print(metrics_table(metrics))
    failed = f" ({metrics['failed']} test clips failed to shard)" if metrics["failed"] else ""
    print(f"eval ({metrics['mode']}, {metrics['views']}x{metrics['crops']} views): text->video R@1 "
          f"{metrics['t2v_r1']:.1f}% vs chance {metrics['chance_r1']:.2f}% on {metrics['n']} clips"
          f"{failed};"
          f" wrote {Path(args.out) / 'metrics.json'}")
    print(json.dumps({k: metrics[k] for k in ("t2v_r1", "v2t_r1", "chance_r1", "n")}))
    return 0
