"""Callbacks of our own: an audit trail of which samples each rank trained on, and the losses.

``BatchLog`` writes one JSON line per batch and rank: the batch number, the sample keys and
every loss term. It is how one checks, after the fact, that ranks saw distinct samples and
that a resumed run continued the data stream where it stopped (the tests read it too).
"""

from __future__ import annotations

import json
from pathlib import Path

from composer import Callback, Logger, State
from composer.utils import dist

__all__ = ["BatchLog"]


class BatchLog(Callback):
    """Appends ``{"rank", "batch", "keys", "loss": {term: value}, "lr"}`` per batch to a jsonl file.

    ``keys`` are this rank's samples; ``loss`` holds the batch's losses averaged over ranks;
    ``lr`` is the learning rate the step used (first parameter group).

    Args:
        path: the file; ``{rank}`` and ``{run_name}`` are filled in (one file per rank).
    """

    def __init__(self, path: str) -> None:
        self.path_format = path
        self._keys: list[str] = []
        self._lr: float | None = None

    def after_dataloader(self, state: State, logger: Logger) -> None:
        self._keys = list(state.batch.get("keys", []))
        # read here: by BATCH_END the scheduler has already moved on to the next step's lr
        lrs = [group["lr"] for opt in state.optimizers for group in opt.param_groups]
        self._lr = lrs[0] if lrs else None

    def batch_end(self, state: State, logger: Logger) -> None:
        # total_loss_dict: whole-batch losses, averaged over ranks ("loss/train/<term>")
        loss = {k.removeprefix("loss/train/"): float(v) for k, v in state.total_loss_dict.items()}
        line = {"rank": dist.get_global_rank(), "batch": int(state.timestamp.batch),
                "keys": self._keys, "loss": loss, "lr": self._lr}
        path = Path(self.path_format.format(rank=dist.get_global_rank(), run_name=state.run_name))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")
