"""Orchestration of `vtp experiment`: grid -> data -> runs -> report (and the published copy)."""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

from commands.experiment.config import ExperimentConfig
from commands.experiment.data import RECORD, DataPaths, DataPlan, build_data, read_record
from commands.experiment.document import render
from commands.experiment.grid import Cell, GridConfig, Run, expand, grid_around_recipe
from commands.experiment.report import aggregate, chance, plot_axes
from commands.experiment.runner import (
    RunnerConfig,
    check_duration,
    execute,
    fingerprints,
    load_results,
    pending,
    recipe_digest,
)

REPORT_NAME = "report.md"
PUBLISHED_NAME = "EXPERIMENTS.md"


def plan_grid(config: ExperimentConfig, recipe) -> tuple[GridConfig, list[Cell], list[Run]]:
    """The grid around the recipe's baseline, its cells and its deduplicated runs."""
    grid = grid_around_recipe(recipe.model.video_mask_ratio, recipe.model.text_mask_ratio,
                              data_seed=config.data_seed,
                              fractions=tuple(sorted(config.fractions)), seeds=config.seeds,
                              axes=config.axes)
    cells, runs = expand(grid)
    return grid, cells, runs


def run_experiment(config: ExperimentConfig, dry_run: bool = False,
                   report_only: bool = False) -> dict:
    """Runs what is missing of the grid and writes the report; returns a summary.

    Args:
        config: the experiment.
        dry_run: print the cells and runs, build and train nothing.
        report_only: rebuild the report from the finished runs only (made with the recipe
            copy already in ``config.out``, when there is one).
    """
    from recipes.config import load_recipe, resolve_recipe

    # every run of one invocation reads one copy of the recipe, even if the file changes
    # meanwhile; a report-only call describes the runs of the copy that is there
    snapshot = config.out / "recipe.yaml"
    keep = report_only and snapshot.is_file()
    source = snapshot if keep else resolve_recipe(Path(config.recipe))
    recipe = load_recipe(str(source), list(config.overrides))
    grid, cells, runs = plan_grid(config, recipe)
    todo = pending(runs, config.out)
    if dry_run:
        print(f"{len(cells)} cells, {len(runs)} distinct runs ({len(todo)} to do):")
        for cell in cells:
            print(f"  {cell.axis:10s} {cell.label:9s} -> {cell.setting.slug}"
                  + (" (baseline)" if cell.baseline else ""))
        return {"cells": len(cells), "runs": len(runs), "pending": len(todo)}
    max_duration = config.max_duration or recipe.trainer.max_duration
    if any(run.setting.equal_epochs for run in runs):
        check_duration(max_duration)  # before minutes of data building
    plan = DataPlan(num_clips=config.num_clips, num_test=config.num_test, seed=config.data_seed,
                    preset=config.preset, workers=config.workers)
    data = datasets(config, plan, runs, report_only, config.gallery_size)
    runs = [run for run in runs if _data_built(run, data)]
    config.out.mkdir(parents=True, exist_ok=True)
    if not keep:
        shutil.copyfile(source, snapshot)
    runner = RunnerConfig(recipe=str(snapshot), out=config.out, work=config.work,
                          max_duration=max_duration, batch_size=recipe.trainer.global_batch_size,
                          vtc_weight=recipe.model.vtc_weight or 1.0,
                          vtm_weight=recipe.model.vtm_weight or 1.0,
                          keep_checkpoints=config.keep_checkpoints,
                          gallery_size=config.gallery_size,
                          extra_overrides=config.overrides, jobs=config.jobs)
    prints = fingerprints(runs, data, runner)
    finished = len(runs) - len(pending(runs, config.out, prints))
    summary = {"runs": len(runs), "skipped": finished, "ran": 0, "failed": []}
    if not report_only:
        summary = execute(runs, data, runner, config.progress)
    results = load_results(runs, config.out, prints)
    setup = setup_info(config, recipe, grid, runs, results, data, plan, max_duration)
    summary["report"] = str(write_report(config.out, cells, grid, results, setup,
                                         image_prefix="", command=command_line(config)))
    if config.publish:
        publish(config, cells, grid, results, setup)
    return summary


def _data_built(run: Run, data: dict[int, DataPaths]) -> bool:
    """Report-only: a run whose data was never built cannot have finished."""
    paths = data.get(run.setting.data_seed)
    return paths is not None and run.setting.fraction in paths.train


def data_folder(config: ExperimentConfig, data_seed: int) -> Path:
    """Where the dataset of ``data_seed`` is built: the work folder for the experiment's own
    seed, a subfolder for another."""
    return config.work if data_seed == config.data_seed else config.work / f"data-seed{data_seed}"


def datasets(config: ExperimentConfig, plan: DataPlan, runs: list[Run],
             report_only: bool, gallery_size: int | None = None) -> dict[int, DataPaths]:
    """Builds (or reuses) each dataset the runs train on: every fraction of the experiment's
    own data seed, the full training set of another. A report-only call builds only the
    experiment's own data if it has no record; another seed without one is left out (its
    runs cannot have finished)."""
    data = {}
    for seed in sorted({run.setting.data_seed for run in runs} | {config.data_seed}):
        folder = data_folder(config, seed)
        if report_only and (folder / RECORD).is_file():
            data[seed] = read_record(folder)
            continue
        if report_only and seed != config.data_seed:
            continue
        fractions = {run.setting.fraction for run in runs if run.setting.data_seed == seed}
        data[seed] = build_data(folder, replace(plan, seed=seed), tuple(sorted(fractions | {1.0})),
                                gallery_size)
    return data


def setup_info(config: ExperimentConfig, recipe, grid: GridConfig, runs: list[Run],
               results: dict, data: dict[int, DataPaths], plan: DataPlan,
               max_duration: str) -> dict:
    """What the report's setup section states (the data facts are the experiment's own
    data seed's)."""
    seconds = [r.get("wall_seconds", r["train_seconds"] + r["eval_seconds"])
               for r in results.values()]
    own = data[config.data_seed]
    return {
        "out": str(config.out), "recipe": str(config.recipe), "model": _model_text(recipe.model),
        "visible_cells": _visible_cells(recipe.model, grid.video_mask_ratios),
        "recipe_sha": recipe_digest(str(config.out / "recipe.yaml")), "max_duration": max_duration,
        "recipe_max_duration": recipe.trainer.max_duration,
        "batch_size": recipe.trainer.global_batch_size,
        "seeds": list(grid.seeds), "baseline": vars(grid.baseline),
        "recipe_video_mask": recipe.model.video_mask_ratio,
        "recipe_text_mask": recipe.model.text_mask_ratio,
        "num_clips": plan.num_clips, "test_clips": own.test_clips,
        "gallery_size": config.gallery_size, **own.facts,
        "data_seed": config.data_seed,
        "data_seeds": list(grid.data_seeds) if "data_seed" in grid.axes else [config.data_seed],
        "train_clips": ", ".join(f"{f:.0%}: {n}" for f, n in sorted(own.train_clips.items())),
        "train_clips_by_fraction": {str(f): n for f, n in own.train_clips.items()},
        "runs_done": len(results), "runs_total": len(runs),
        "run_seconds": sum(seconds) if seconds else math.nan,
        "seconds_per_run": sum(seconds) / len(seconds) if seconds else math.nan,
        "cores": os.cpu_count(), "date": datetime.date.today().isoformat(),
        # the grid `make experiments` runs (its report names the make target)
        "default_grid": command_line(replace(config, publish=None)) == "vtp experiment",
    }


def _model_text(model) -> str:
    return (f"{model.depth} blocks of width {model.width}, {model.image_size} px, "
            f"{model.num_frames} frames, tubelet {'x'.join(map(str, model.tubelet))}")


def _visible_cells(model, ratios: tuple[float, ...]) -> str:
    """Visible tube cells per time slice at each ratio (the tube mask rounds to whole cells)."""
    cells = (model.image_size // model.tubelet[1]) * (model.image_size // model.tubelet[2])
    side = model.image_size // model.tubelet[1]
    shown = " / ".join(str(cells - round(r * cells)) for r in ratios)
    listed = " / ".join(f"{r:g}" for r in ratios)
    return f"{side}x{side} grid per time slice: ratios {listed} leave {shown} visible cells"


def command_line(config: ExperimentConfig) -> str:
    """The `vtp experiment` command that regenerates this report (defaults left out)."""
    default = ExperimentConfig()
    parts = ["vtp experiment"]
    for flag, value, base in (("--recipe", config.recipe, default.recipe),
                              ("--out", config.out, default.out),
                              ("--work", config.work, default.work),
                              ("--max-duration", config.max_duration, default.max_duration),
                              ("--num-clips", config.num_clips, default.num_clips),
                              ("--num-test", config.num_test, default.num_test),
                              ("--gallery-size", config.gallery_size, default.gallery_size),
                              ("--data-seed", config.data_seed, default.data_seed),
                              ("--preset", config.preset, default.preset)):
        if value != base:
            parts.append(f"{flag} {value}")
    if config.seeds != default.seeds:
        parts.append("--seeds " + ",".join(map(str, config.seeds)))
    if config.axes != default.axes:
        parts.append("--axes " + ",".join(config.axes))
    if tuple(sorted(config.fractions)) != default.fractions:
        parts.append("--fractions " + ",".join(map(str, sorted(config.fractions))))
    parts += [f"--set {o}" for o in config.overrides]
    if config.publish:
        parts.append(f"--publish {config.publish}")
    return " ".join(parts)


def write_report(folder: Path, cells: list[Cell], grid: GridConfig, results: dict, setup: dict,
                 image_prefix: str, command: str, name: str = REPORT_NAME,
                 plot_folder: Path | None = None) -> Path:
    """Writes the document, its plots and results.json; returns the document's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (plot_folder or folder).mkdir(parents=True, exist_ok=True)
    clips = {float(k): v for k, v in setup.get("train_clips_by_fraction", {}).items()}
    rows = aggregate(cells, grid.seeds, results, clips)
    # chance of the experiment's own held-out split (another dataset's may differ by a clip)
    own = {k: r for k, r in results.items()
           if r.get("data_seed", 0) == setup.get("data_seed", 0)}
    chance_r1, chance_r5, _ = chance(own, setup.get("gallery_size") or setup.get("test_clips", 0))
    plots = plot_axes(rows, chance_r1, chance_r5, plot_folder or folder) if results else []
    text = render(rows, chance_r1, chance_r5, setup, [image_prefix + p.name for p in plots],
                  command, image_prefix + "recipe.yaml")
    snapshot = Path(setup["out"]) / "recipe.yaml"
    if plot_folder and snapshot.is_file():
        shutil.copyfile(snapshot, plot_folder / "recipe.yaml")
    path = folder / name
    path.write_text(text)
    (plot_folder or folder).joinpath("results.json").write_text(
        json.dumps({"setup": setup, "runs": results}, indent=1, default=str) + "\n")
    return path


def publish(config: ExperimentConfig, cells: list[Cell], grid: GridConfig, results: dict,
            setup: dict) -> Path:
    """The committed copy: ``publish/EXPERIMENTS.md`` with plots under ``publish/experiments/``."""
    plots = config.publish / "experiments"
    shutil.rmtree(plots, ignore_errors=True)
    return write_report(config.publish, cells, grid, results, setup, image_prefix="experiments/",
                        command=command_line(config), name=PUBLISHED_NAME, plot_folder=plots)
