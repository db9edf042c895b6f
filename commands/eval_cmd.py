"""Text-video retrieval of a checkpoint: vtp eval CHECKPOINT --data TEST --out DIR.

TEST is an MSR-VTT-style json (list of video path + caption; the clips are sharded into
DIR/test-shards first) or a shard folder. Prints R@1/5/10, median and mean rank in both
directions with chance level, and writes DIR/metrics.json and DIR/retrieval.md.
"""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a `vtp train` checkpoint (e.g. .../latest-rank0.pt)")
    parser.add_argument("--data", required=True, help="test json (MSR-VTT style) or shard folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mode", choices=("zero-shot", "finetune"), default="zero-shot")
    parser.add_argument("--views", type=int, default=1, help="temporal clips averaged per video")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--codec", choices=("h264", "vp9", "mjpeg"), default=None,
                        help="codec for sharding json clips (default: vp9 on CPU, h264 on GPU)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="short side of sharded json clips (default: 8/7 of the model input)")
    parser.add_argument("--video-root", default=None,
                        help="folder the json's video paths start from (default: the json's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a data setting of the checkpoint (stride, sampler, "
                             "sparse_clips, text_max_length, tokenizer_path, interpolation)")
    parser.add_argument("--finetune-data", default="", help="training shards for --mode finetune")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-batch-size", type=int, default=32)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")


def _settings(pairs: list[str]) -> dict:
    import yaml

    from commands.cli import UsageError

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set needs KEY=VALUE, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    return settings


def _finetune_line(out) -> str:
    """One line on the fine-tuning run, from the log it wrote."""
    summary = json.loads((out / "finetune_log.json").read_text())["summary"]
    return (f"fine-tuned the dual encoder: {summary['steps']} steps in {summary['seconds']:.0f} s, "
            f"contrastive loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} "
            f"(chance {summary['chance_loss']:.3f}); curve: {out / 'finetune_loss.png'}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from commands.cli import UsageError
    from evaluation.evaluate import EvalConfig, FinetuneConfig, evaluate_checkpoint, metrics_table

    if not Path(args.checkpoint).is_file():
        raise UsageError(f"checkpoint {args.checkpoint} does not exist")
    if not Path(args.data).exists():
        raise UsageError(f"--data {args.data} does not exist")
    if args.mode == "finetune" and not args.finetune_data:
        raise UsageError("--mode finetune needs --finetune-data TRAIN_SHARDS")
    try:
        finetune = FinetuneConfig(train_data=args.finetune_data, steps=args.finetune_steps,
                                  batch_size=args.finetune_batch_size, lr=args.finetune_lr)
        config = EvalConfig(data=args.data, out=args.out, mode=args.mode, views=args.views,
                            batch_size=args.batch_size, device=args.device, codec=args.codec,
                            short_side=args.short_side, workers=args.workers,
                            video_root=args.video_root, settings=_settings(args.set),
                            finetune=finetune, seed=args.seed)
        metrics = evaluate_checkpoint(args.checkpoint, config, progress=not args.no_progress)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.mode == "finetune":
        print(_finetune_line(Path(args.out)))
    print(metrics_table(metrics))
    failed = f" ({metrics['failed']} test clips failed to shard)" if metrics["failed"] else ""
    print(f"eval ({metrics['mode']}, {metrics['views']} view(s)): text->video R@1 "
          f"{metrics['t2v_r1']:.1f}% vs chance {metrics['chance_r1']:.2f}% on {metrics['n']} clips"
          f"{failed};"
          f" wrote {Path(args.out) / 'metrics.json'}")
    print(json.dumps({k: metrics[k] for k in ("t2v_r1", "v2t_r1", "chance_r1", "n")}))
    return 0
