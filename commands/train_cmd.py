"""Train from a YAML recipe: vtp train RECIPE.yaml [section.key=value ...].

Sections: model data optimizer scheduler trainer callbacks loggers (plus top-level seed,
run_name, variables). Values are parsed as YAML, e.g. ``data.path=/shards seed=3
trainer.max_duration=20ba``. Several processes: ``composer -n 2 -m commands.cli train ...``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the YAML recipe, e.g. recipes/tiny-synthetic.yaml")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="recipe overrides, values parsed as YAML")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError
    from recipes.config import RecipeError
    from recipes.train import summary, train_from_yaml

    try:  # recipe errors surface before the first step, as a usage error naming the key
        trainer = train_from_yaml(args.recipe, args.overrides)
    except RecipeError as err:
        raise UsageError(str(err)) from err
    print(summary(trainer), flush=True)
    trainer.close()
    return 0
