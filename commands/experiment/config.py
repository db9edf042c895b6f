"""The experiment's settings (one typed configuration for the CLI and for Python callers)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from commands.experiment.grid import AXES, GridConfig


@dataclass
class ExperimentConfig:
    """One `vtp experiment` invocation.

    Args:
        recipe: training recipe (path or shipped name).
        out: report folder (report.md, plots, results.json, runs/).
        work: data and checkpoint folder.
        seeds: training seeds per cell (seed = initialisation, data order and masks); three
            give a spread that a 20% relative change must clear.
        max_duration: training length of each run (equal-epochs runs train their share of
            it); None uses the recipe's. At 300 steps the baseline's seeds agree (t2v R@1
            10.8 ± 0.4, so a 20% change is outside the noise); at the recipe's own 1200 they
            split (23.2, 44.6 and more, benchmarks/EXPERIMENTS.md), so 3 seeds cannot resolve
            a 20% change there, and each run costs four times as much.
        axes: which axes to run (commands.experiment.grid.AXES).
        fractions: training-set shares of the data axis.
        num_clips, num_test, data_seed: size and seed of the synthetic dataset (the
            ``data_seed`` axis also trains the baseline on seed ``data_seed + 1``).
        gallery_size: each held-out query is ranked within a disjoint gallery of about this
            many clips (`evaluation.retrieval.galleries`). R@1 on one gallery of 200 counts 200
            hits or misses, whose chance spread (about 1.9 points at R@1 7.5%) was the whole
            seed spread of the first grid; 2000 held-out clips in 10 galleries keep the
            200-clip difficulty and count 10x the queries.
        preset: the `vtp synth` preset of the dataset (tools/synth/presets.py).
        workers: processes for synth, clean and shard.
        jobs: runs trained at once, each a process with the recipe's threads (the tiny recipe
            uses 1 torch thread and 2 DALI threads, so 2 jobs share 2 cores).
        overrides: more recipe overrides applied to every run.
        keep_checkpoints: keep each run's final checkpoint.
        publish: also write ``publish/EXPERIMENTS.md`` and ``publish/experiments/*.png``.
        progress: show progress bars.
    """

    recipe: str = "recipes/tiny-synthetic.yaml"
    out: Path = Path("reports/experiments")
    work: Path = Path("data/experiments")
    seeds: tuple[int, ...] = (0, 1, 2)
    max_duration: str | None = "300ba"
    axes: tuple[str, ...] = tuple(AXES)
    fractions: tuple[float, ...] = GridConfig.fractions
    num_clips: int = 800
    num_test: int = 2000
    gallery_size: int = 200
    data_seed: int = 0
    preset: str = "demo"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    jobs: int = 1
    overrides: tuple[str, ...] = ()
    keep_checkpoints: bool = False
    publish: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.out, self.work = Path(self.out), Path(self.work)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        unknown = set(self.axes) - set(AXES)
        if unknown or not self.axes:
            raise ValueError(f"unknown or no axes {sorted(unknown)}; known: {', '.join(AXES)}")
        if self.max_duration and "data_epochs" in self.axes:
            from commands.experiment.runner import check_duration

            check_duration(self.max_duration)
        if not self.fractions or not all(0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"fractions must be in (0, 1], got {self.fractions}")
        if 1.0 not in self.fractions:
            raise ValueError("fractions must include 1.0: the baseline trains on all the data")
        if self.num_clips < 1 or self.num_test < 2:
            raise ValueError("num_clips must be >= 1 and num_test >= 2")
        if not 2 <= self.gallery_size <= self.num_test:
            raise ValueError(f"gallery_size must be between 2 and num_test ({self.num_test}), "
                             f"got {self.gallery_size}")
        from tools.synth.presets import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if self.workers < 1 or self.jobs < 1:
            raise ValueError(f"workers and jobs must be >= 1, got {self.workers}, {self.jobs}")
