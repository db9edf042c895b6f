"""Train from a YAML recipe: vtp train RECIPE.yaml [section.key=value ...].

Sections: model data optimizer scheduler trainer callbacks loggers (plus top-level seed,
run_name, variables). Values are parsed as YAML, e.g. ``data.path=/shards seed=3
trainer.max_duration=20ba``. Several processes: ``composer -n 2 -m tools.cli train ...``.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the YAML recipe, e.g. recipes/tiny-synthetic.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="recipe overrides, values parsed as YAML")


def run(args: argparse.Namespace) -> int:
    from recipes.config import RecipeError
    from recipes.guard import DivergenceError
    from recipes.train import summary, train_from_yaml
    from tools.cli import UsageError

    try:  # recipe errors surface before the first step, as a usage error naming the key
        trainer = train_from_yaml(args.recipe, args.overrides)
    except RecipeError as err:
        raise UsageError(str(err)) from err
    except DivergenceError as err:  # a finding about the run, not a crash: no traceback
        print(f"vtp train: {err}", file=sys.stderr, flush=True)
        return 1
    print(summary(trainer), flush=True)
    trainer.close()
    return 0
