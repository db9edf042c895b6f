"""The divergence guard: stop a run at the first non-finite loss or gradient.

A NaN that reaches the optimizer poisons every weight, and every checkpoint saved after it;
the run then trains on for hours on garbage. The guard checks each step before the optimizer
moves (Composer's ``AFTER_TRAIN_BATCH`` fires inside the step closure, after gradients are
complete and all-reduced): on the first non-finite loss term or gradient it raises
:class:`DivergenceError`, which ends ``fit`` before anything is saved, so the last checkpoint
on disk (and ``latest``) stays the last good one. Every step it also logs the global gradient
norm (``grad_norm/global``); Composer logs each loss term as ``loss/train/<term>``.

Ranks agree before anyone raises (one small all-reduce per step): a NaN in one rank's loss
would otherwise stop that rank alone and leave the others waiting in the next collective.
"""

from __future__ import annotations

import math

import torch
from composer import Callback, Logger, State
from composer.utils import dist

__all__ = ["DivergenceGuard", "DivergenceError"]


class DivergenceError(RuntimeError):
    """A loss term or gradient became non-finite; the message names it, the step and the
    checkpoint to go back to."""


class DivergenceGuard(Callback):
    """Raises :class:`DivergenceError` at the first non-finite loss term or gradient.

    Args:
        save_folder: the run's checkpoint folder (``{run_name}`` filled in), named in the
            message as where the last good checkpoint is; None when the run saves nothing.
    """

    def __init__(self, save_folder: str | None = None) -> None:
        self.save_folder = save_folder
        self._bad_terms: list[str] = []
        self._bad_values: dict[str, float] = {}

    def batch_start(self, state: State, logger: Logger) -> None:
        self._bad_terms, self._bad_values = [], {}

    def after_loss(self, state: State, logger: Logger) -> None:
        # once per microbatch; the loss dict is {"total": ..., "<term>": ...}
        loss = state.loss if isinstance(state.loss, dict) else {"total": state.loss}
        values = torch.stack([v.detach().float().reshape(()) for v in loss.values()])
        finite = torch.isfinite(values).tolist()
        for (name, value), ok in zip(loss.items(), finite, strict=True):
            if not ok and name not in self._bad_terms:
                self._bad_terms.append(name)
                self._bad_values[name] = float(value)

    def after_train_batch(self, state: State, logger: Logger) -> None:
        norm = _global_grad_norm(state.model)
        flags = torch.tensor([float(bool(self._bad_terms)), 0.0 if math.isfinite(norm) else 1.0])
        if dist.get_world_size() > 1:
            flags = flags.to(_device_of(state.model))
            dist.all_reduce(flags, reduce_operation="MAX")
        logger.log_metrics({"grad_norm/global": norm})
        bad_loss, bad_grad = (bool(f) for f in flags.tolist())
        if bad_loss or bad_grad:
            message = self._message(state, norm, bad_loss, bad_grad)
            for cb in state.callbacks:  # the run card records why the run ended
                if hasattr(cb, "record_failure"):
                    cb.record_failure(state, message)
            raise DivergenceError(message)

    def _message(self, state: State, norm: float, bad_loss: bool, bad_grad: bool) -> str:
        step = int(state.timestamp.batch) + 1  # the counter advances after this event
        if self._bad_terms:
            # a term is more telling than the total it poisons
            terms = [t for t in self._bad_terms if t != "total"] or self._bad_terms
            what = ", ".join(f"loss term {t} = {self._bad_values[t]}" for t in terms)
        elif bad_loss:
            what = "a loss term on another rank"
        else:
            what = f"gradient norm = {norm} (first bad parameter: {_first_bad_grad(state.model)})"
        kept = (f"the last good checkpoint is the latest in {self.save_folder}; nothing was saved "
                "after it" if self.save_folder else "this run saves no checkpoints")
        return (f"training diverged at step {step}: {what}. Stopped before the optimizer step; "
                f"{kept}. Lower optimizer.lr, set trainer.clip_grad_norm, or check the batch's "
                "samples (callbacks.batch_log records them).")


def _global_grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _first_bad_grad(model: torch.nn.Module) -> str:
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return name
    return "none found locally"


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
