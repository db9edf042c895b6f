"""Optimizer and learning-rate schedule of a recipe (SimVTP/VideoMAE pretraining settings).

Weight decay goes only on the weights of linear and convolution layers: norms, biases,
embeddings, position tables, mask tokens and temperatures get none (VideoMAE excludes 1-D
parameters, ``pos_embed``, ``cls_token`` and ``mask_token``; whitelisting the layer types
that should decay catches all of those and any new token a model adds).
"""

from __future__ import annotations

import torch
from composer.optim import (
    ComposerScheduler,
    ConstantWithWarmupScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledAdamW,
)
from torch import nn

from recipes.config import RecipeConfig

__all__ = ["param_groups", "decoupled_adamw", "adamw", "OPTIMIZER_CLASSES", "build_optimizer",
           "cosine_with_warmup", "build_scheduler"]

DECAYED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Composer keeps an optimizer's state in a checkpoint under its class name, and on load
# skips (with a warning only) the state of another class: Adam's moments would start at zero.
OPTIMIZER_CLASSES = {"decoupled_adamw": DecoupledAdamW, "adamw": torch.optim.AdamW}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Args:
        model: the module to optimise; a ``no_weight_decay()`` method (timm's API), if
            present, names further parameters to exclude.
        weight_decay: decay of the decayed group.

    Returns:
        Two parameter groups, ``decay`` first, each with a ``names`` list for inspection.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = {}, {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            decayed = isinstance(module, DECAYED_LAYERS) and name == "weight" and full not in skip
            (decay if decayed else no_decay)[full] = param
    return [
        {"params": list(decay.values()), "names": list(decay), "weight_decay": weight_decay},
        {"params": list(no_decay.values()), "names": list(no_decay), "weight_decay": 0.0},
    ]


def decoupled_adamw(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float], eps: float = 1e-8) -> DecoupledAdamW:
    """Composer's DecoupledAdamW at peak ``lr`` with torch AdamW's ``weight_decay`` on the
    groups of :func:`param_groups`.

    DecoupledAdamW shrinks weights by ``weight_decay * lr_t / lr_peak`` per step, while torch's
    AdamW (which SimVTP's 0.05 refers to) shrinks them by ``weight_decay * lr_t``; passing
    ``weight_decay * lr_peak`` gives exactly the paper's decay.
    """
    groups = param_groups(model, weight_decay * lr)
    for group in groups:
        group.pop("names")
    return DecoupledAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=0.0)


def adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
          eps: float = 1e-8) -> torch.optim.AdamW:
    """torch's AdamW (SimVTP's optimizer) at peak ``lr`` on the groups of :func:`param_groups`.

    The fused kernel updates every tensor in one pass: 13 ms against 63 ms (Composer's
    DecoupledAdamW) per step of the tiny model's 9M parameters on one CPU thread.
    """
    groups = param_groups(model, weight_decay)
    for group in groups:
        group.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def build_optimizer(model: nn.Module, recipe: RecipeConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer at its peak lr (scaled by global batch / 256 if asked)."""
    opt = recipe.optimizer
    build = {"adamw": adamw, "decoupled_adamw": decoupled_adamw}[opt.name]
    return build(model, recipe.peak_lr, opt.weight_decay, opt.betas, opt.eps)


def cosine_with_warmup(t_warmup: str, peak_lr: float, min_lr: float) -> ComposerScheduler:
    """Linear warm-up from 0 to the peak, then cosine to ``min_lr``."""
    return CosineAnnealingWithWarmupScheduler(t_warmup=t_warmup, alpha_f=min_lr / peak_lr)


def build_scheduler(recipe: RecipeConfig) -> ComposerScheduler:
    """Linear warm-up from 0 to the peak, then cosine to ``min_lr`` (or constant)."""
    sched = recipe.scheduler
    if sched.name == "constant_with_warmup":
        return ConstantWithWarmupScheduler(t_warmup=sched.t_warmup)
    return cosine_with_warmup(sched.t_warmup, recipe.peak_lr, recipe.min_lr)
