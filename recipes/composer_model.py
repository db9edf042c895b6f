"""The Composer adapter around :class:`model.UnifiedMAE` (the model itself knows no Composer).

``loss`` returns ``{"total": ..., "mvm": ..., ...}``: Composer backpropagates ``total`` and
logs every entry as ``loss/train/<term>``; the train metrics keep running means of each
term over the epoch. ``flops_per_batch`` lets SpeedMonitor report FLOP/s and MFU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from composer.models import ComposerModel
from torch import nn
from torchmetrics import MeanMetric, Metric

from recipes.data_settings import DataSettings

__all__ = ["VTPComposerModel", "LOSS_TERMS"]

LOSS_TERMS = ("mvm", "mlm", "vtc", "vtm")


class VTPComposerModel(ComposerModel):
    """Wraps a model whose ``forward(batch)`` returns ``{"loss": total, "loss_<term>": ...}``.

    Args:
        model: the module (``model.UnifiedMAE``); trained in place.
        terms: loss terms that the model reports (those with a positive weight).
        flops_per_batch: training FLOPs (forward + backward) of a batch dict, e.g.
            ``functools.partial(model.flops_per_batch, config)``; None leaves the attribute
            undefined, so SpeedMonitor reports no FLOP/s or MFU.
        data_settings: how the training clips were sampled and resized and captions
            tokenized: saved with the model so that evaluation feeds it clips and captions
            the way it was trained.
    """

    def __init__(self, model: nn.Module, terms: tuple[str, ...],
                 flops_per_batch: Callable[[dict], float] | None = None,
                 data_settings: DataSettings | None = None) -> None:
        super().__init__()
        self.model = model
        self.data_settings = data_settings or DataSettings()
        self.terms = tuple(terms)
        self.train_metrics = nn.ModuleDict({f"loss_{t}": TermMean(t) for t in self.terms})
        self.eval_metrics = nn.ModuleDict({f"loss_{t}": TermMean(t) for t in self.terms})
        if flops_per_batch is not None:
            self.flops_per_batch = flops_per_batch

    def get_extra_state(self) -> dict[str, Any]:
        # Saved in every checkpoint as "_extra_state": the checkpoint then describes its model.
        return {"model_config": self.model.config.to_dict(),
                "data_settings": asdict(self.data_settings)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # A run may load a checkpoint with other loss weights; shapes are checked by the weights.
        self.checkpoint_model_config = state.get("model_config")

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    def loss(self, outputs: dict[str, torch.Tensor],
             batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The total loss to backpropagate, with each term next to it for logging."""
        terms = {t: outputs[f"loss_{t}"] for t in self.terms if f"loss_{t}" in outputs}
        return {"total": outputs["loss"], **terms}

    def eval_forward(self, batch: dict[str, Any],
                     outputs: Any | None = None) -> dict[str, torch.Tensor]:
        # During training Composer passes the train step's outputs: reuse them, no second pass.
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return dict(self.train_metrics if is_train else self.eval_metrics)

    def update_metric(self, batch: dict[str, Any], outputs: dict[str, torch.Tensor],
                      metric: Metric) -> None:
        key = f"loss_{getattr(metric, 'term', '')}"
        if key in outputs:
            metric.update(outputs[key].detach().float())


class TermMean(MeanMetric):
    """Running mean of one loss term (the term travels with the metric: Composer copies metrics)."""

    def __init__(self, term: str) -> None:
        super().__init__()
        self.term = term
