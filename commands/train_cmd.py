"""Train from a YAML recipe: vtp train RECIPE.yaml [section.key=value ...].

Sections: model data optimizer scheduler trainer callbacks loggers (plus top-level seed,
run_name, variables). Values are parsed as YAML, e.g. ``data.path=/shards seed=3
trainer.max_duration=20ba``. Several processes: ``composer -n 2 -m commands.cli train ...``.
Rerunning a run that autoresume finds finished prints so and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the YAML recipe, e.g. recipes/tiny-synthetic.yaml, or "
                                       "the name of a shipped one (tiny-synthetic)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="recipe overrides, values parsed as YAML (default: none)")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError
    from recipes.config import RecipeError, load_recipe
    from recipes.preflight import check_recipe_paths

    try:  # recipe errors surface before torch loads, as a usage error naming the key
        recipe = load_recipe(args.recipe, args.overrides)
        check_recipe_paths(recipe)
    except RecipeError as err:
        raise UsageError(str(err)) from err
    from recipes.checkpoint import check_checkpoints_to_load

    try:  # before Composer loads (seconds), and before it unpickles anything
        check_checkpoints_to_load(recipe, int(os.environ.get("RANK", 0)))
    except RecipeError as err:
        raise UsageError(str(err)) from err
    from recipes.callbacks import BadSampleBudgetError
    from recipes.guard import DivergenceError
    from recipes.train import build_trainer, finished_at, summary

    try:  # RecipeError, CodecError (shards the device cannot decode), Composer's ValueErrors
        trainer = build_trainer(recipe)
    except ValueError as err:
        raise UsageError(str(err)) from err
    done = finished_at(trainer)
    if done is not None:
        print(f"run {trainer.state.run_name} already finished at {done} batches "
              f"(trainer.max_duration={recipe.trainer.max_duration}); nothing to train. "
              "Raise trainer.max_duration to continue it.", flush=True)
        trainer.close()
        return 0
    try:
        trainer.fit()
    except BadSampleBudgetError as err:
        from recipes.run_card import RunCard

        for card in (cb for cb in trainer.state.callbacks if isinstance(cb, RunCard)):
            card.record_failure(trainer.state, str(err), status="stopped: bad samples")
        trainer.close()
        raise UsageError(str(err)) from err
    except DivergenceError as err:  # a finding about the run, not a crash: no traceback
        print(f"vtp train: {err}", file=sys.stderr, flush=True)
        trainer.close()
        return 1
    print(summary(trainer), flush=True)
    trainer.close()
    return 0
