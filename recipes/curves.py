"""Curves a person reads: ``curves.png`` (every loss term and the learning rate against step)
beside the run card, redrawn after every checkpoint and at the end of the run.

The points live in ``curves.jsonl`` in the same folder (one line per step), so a resumed run
draws its whole history: on resume, points past the step it resumed from (written before a
crash, then trained again) are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from composer import Callback, Logger, State
from composer.utils import dist

from recipes.plots import plot_losses
from recipes.run_card import card_folder

__all__ = ["Curves", "CURVES_PNG", "CURVES_JSONL", "read_curves"]

CURVES_PNG, CURVES_JSONL = "curves.png", "curves.jsonl"


def read_curves(path: Path, up_to: int | None = None) -> list[dict]:
    """The points of a ``curves.jsonl`` in step order (the latest line wins for a step)."""
    points: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                point = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if up_to is None or point["step"] <= up_to:
                points[point["step"]] = point
    return [points[s] for s in sorted(points)]


class Curves(Callback):
    """Records each step's loss terms and lr; draws them after checkpoints and at the end.

    Args:
        save_folder: the run's checkpoint folder (``{run_name}`` filled in); None draws nothing.
    """

    after_checkpoints = True  # build_trainer runs it after Composer's checkpoint saver

    def __init__(self, save_folder: str | None) -> None:
        self.save_folder = save_folder
        self.folder: Path | None = None
        self._lr: float | None = None
        self._drawn_at = -1

    def fit_start(self, state: State, logger: Logger) -> None:
        folder = card_folder(self.save_folder, state.run_name)
        if folder is None or dist.get_global_rank() != 0:
            return
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # keep what the resumed state has trained; rewrite so the file holds no stale steps
        kept = read_curves(folder / CURVES_JSONL, up_to=int(state.timestamp.batch))
        (folder / CURVES_JSONL).write_text("".join(json.dumps(p) + "\n" for p in kept))

    def after_dataloader(self, state: State, logger: Logger) -> None:
        # read here: by BATCH_END the scheduler has already moved on to the next step's lr
        lrs = [group["lr"] for opt in state.optimizers for group in opt.param_groups]
        self._lr = lrs[0] if lrs else None

    def batch_end(self, state: State, logger: Logger) -> None:
        if self.folder is None:
            return
        point: dict[str, Any] = {"step": int(state.timestamp.batch), "lr": self._lr}
        point.update({k.removeprefix("loss/train/"): float(v)
                      for k, v in state.total_loss_dict.items()})
        with (self.folder / CURVES_JSONL).open("a") as f:
            f.write(json.dumps(point) + "\n")

    def batch_checkpoint(self, state: State, logger: Logger) -> None:
        if self.folder is not None and _saved_at(state) == int(state.timestamp.batch):
            self.draw(state)

    def epoch_checkpoint(self, state: State, logger: Logger) -> None:
        self.batch_checkpoint(state, logger)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.folder is not None:
            self.draw(state)

    def draw(self, state: State) -> Path | None:
        """Redraws ``curves.png`` from ``curves.jsonl``; returns its path (None: no points)."""
        step = int(state.timestamp.batch)
        if self._drawn_at == step:
            return self.folder / CURVES_PNG
        points = read_curves(self.folder / CURVES_JSONL)
        if not points:
            return None
        series: dict[str, list[tuple[int, float]]] = {}
        for point in points:
            for name, value in point.items():
                if name != "step" and value is not None:
                    series.setdefault(name, []).append((point["step"], value))
        self._drawn_at = step
        return plot_losses(series, self.folder / CURVES_PNG,
                           title=f"{state.run_name}: loss terms and lr, step {step}")


def _saved_at(state: State) -> int | None:
    """The batch of the newest checkpoint Composer's saver wrote (None before any)."""
    from composer.callbacks import CheckpointSaver

    stamps = [ts for cb in state.callbacks if isinstance(cb, CheckpointSaver)
              for ts in cb.all_saved_checkpoints_to_timestamp.values()]
    return max((int(ts.batch) for ts in stamps), default=None)
