"""The `vtp` command line: one subcommand per stage of the data flow.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules keep heavy imports (torch, DALI, Composer) inside ``run`` so
that ``vtp --help`` and the light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tools.errors import UsageError

# name -> (module, one-line help). The order is the order of the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("tools.synth", "generate the seeded synthetic WebVid-format dataset"),
    "clean": ("tools.clean", "clean WebVid captions: named rules, drops, duplicate groups, report"),
    "subset": ("tools.subset",
               "nested deterministic subsets by hash(salt, videoid) < p, with a report"),
    "shard": ("commands.shard_cmd",
              "transcode, check and write videos into MDS / WebDataset shards"),
    "merge": ("tools.merge", "join the parts of a multi-machine `vtp shard` run"),
    "show-batch": ("commands.show_batch",
                   "PNG of one training batch as the model sees it + mask stats"),
    "bench": ("commands.bench_pipeline",
              "data pipeline samples/s against the bare decoder and peer loaders"),
    "train": ("commands.train_cmd", "train from a YAML recipe with section.key=value overrides"),
    "eval": ("commands.eval_cmd",
             "text-video retrieval (R@1/5/10, ranks) of a checkpoint on a test split"),
    "export": ("commands.export_cmd",
               "write a checkpoint's video encoder as a transformers VideoMAEModel"),
    "experiment": ("commands.experiment",
                   "SimVTP's claims in miniature: a grid of short runs -> table + plots"),
    "doctor": ("commands.doctor",
               "versions, decoders, memory and disk; can this machine run a recipe?"),
    "visualize": ("commands.visualize",
                  "reconstructions, MLM fills and VTC scores of a checkpoint"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vtp",
        description="Masked video-text pretraining: data tools, training and evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with status 2 and a usage line on bad input
    try:
        return int(args._module.run(args) or 0)
    except UsageError as err:
        parser.exit(2, f"vtp {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
