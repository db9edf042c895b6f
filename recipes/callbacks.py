"""Callbacks of our own: an audit trail of which samples each rank trained on, and the losses;
a log and a budget of the corrupt samples the loader skipped.

``BatchLog`` writes one JSON line per batch and rank: the batch number, the sample keys and
every loss term. It is how one checks, after the fact, that ranks saw distinct samples and
that a resumed run continued the data stream where it stopped (the tests read it too).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from composer import Callback, Logger, State
from composer.utils import dist

__all__ = ["StepLr", "BatchLog", "BadSamples", "BadSampleBudgetError"]


class StepLr(Callback):
    """Remembers the learning rate the current step uses (first parameter group): ``step_lr``."""

    def __init__(self) -> None:
        self.step_lr: float | None = None

    def after_dataloader(self, state: State, logger: Logger) -> None:
        # read here: by BATCH_END the scheduler has already moved on to the next step's lr
        lrs = [group["lr"] for opt in state.optimizers for group in opt.param_groups]
        self.step_lr = lrs[0] if lrs else None


class BatchLog(StepLr):
    """Appends ``{"rank", "batch", "keys", "loss": {term: value}, "lr"}`` per batch to a jsonl file.

    ``keys`` are this rank's samples; ``loss`` holds the batch's losses averaged over ranks;
    ``lr`` is the learning rate the step used (first parameter group).

    Args:
        path: the file; ``{rank}`` and ``{run_name}`` are filled in (one file per rank).
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path_format = path
        self._keys: list[str] = []

    def after_dataloader(self, state: State, logger: Logger) -> None:
        super().after_dataloader(state, logger)
        self._keys = list(state.batch.get("keys", []))

    def batch_end(self, state: State, logger: Logger) -> None:
        # total_loss_dict: whole-batch losses, averaged over ranks ("loss/train/<term>")
        loss = {k.removeprefix("loss/train/"): float(v) for k, v in state.total_loss_dict.items()}
        line = {"rank": dist.get_global_rank(), "batch": int(state.timestamp.batch),
                "keys": self._keys, "loss": loss, "lr": self.step_lr}
        path = Path(self.path_format.format(rank=dist.get_global_rank(), run_name=state.run_name))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")


class BadSampleBudgetError(RuntimeError):
    """More corrupt samples than ``data.max_bad_samples`` allows; the message lists them."""


class BadSamples(Callback):
    """Logs each corrupt sample the loader skipped (key and reason) and stops the run once
    more distinct keys than the budget were skipped.

    The batch builder replaces a corrupt sample and reports it in the batch's ``skipped`` list;
    here it goes to stderr, to every FileLogger (the run's log) and to the metric
    ``data/bad_samples``.

    Args:
        max_bad: the budget, a count or a fraction of this process's samples
            (``pipeline.DataConfig.max_bad_samples``).
    """

    def __init__(self, max_bad: int | float) -> None:
        self.max_bad = max_bad
        self.bad: dict[str, str] = {}

    def _budget(self, state: State) -> int:
        if isinstance(self.max_bad, int):
            return self.max_bad
        try:
            samples = len(state.dataloader.dataset)
        except (AttributeError, TypeError):
            samples = 0
        return math.ceil(self.max_bad * samples)

    def after_dataloader(self, state: State, logger: Logger) -> None:
        fresh = [s for s in state.batch.get("skipped") or [] if s["key"] not in self.bad]
        if not fresh:
            return
        from composer.loggers import FileLogger

        batch = int(state.timestamp.batch) + 1
        for sample in fresh:
            self.bad[sample["key"]] = sample["reason"]
            line = f"skipped corrupt sample {sample['key']} in batch {batch}: {sample['reason']}"
            print(f"vtp train: {line}", file=sys.stderr, flush=True)
            for destination in logger.destinations:
                if isinstance(destination, FileLogger):
                    destination.write("[bad sample]: ", line + "\n")
        logger.log_metrics({"data/bad_samples": len(self.bad)})
        budget = self._budget(state)
        if len(self.bad) > budget:
            raise BadSampleBudgetError(
                f"{len(self.bad)} corrupt samples, more than data.max_bad_samples="
                f"{self.max_bad} allows ({budget}): {sorted(self.bad)}. Re-run `vtp shard` on "
                "their sources (it drops undecodable clips), or raise data.max_bad_samples")
