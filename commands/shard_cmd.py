"""`vtp shard`: the data tool's command line (tools.shard) plus `--for-recipe RECIPE`.

A recipe belongs to the training stage, above the data tools, so this front end reads it and
hands tools.shard plain settings (frame step, key frame interval, short side).
"""

from __future__ import annotations

import argparse

from tools import shard as shard_tool
from tools.errors import UsageError

# `vtp shard --help` describes the data tool (this module only adds a flag to it).
__doc__ = shard_tool.__doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shard_tool.add_arguments(parser)
    parser.add_argument("--for-recipe", default=None, metavar="RECIPE",
                        help="take --frame-step, --gop and --short-side from a recipe's data "
                             "section (flags given explicitly win)")


def run(args: argparse.Namespace) -> int:
    from recipes.shard_settings import recipe_settings

    try:
        args.recipe_settings = recipe_settings(args.for_recipe) if args.for_recipe else None
    except ValueError as err:
        raise UsageError(str(err)) from err
    return shard_tool.run(args)
