"""Read the model back out of a Composer training checkpoint (for evaluation and export).

Composer saves the adapter's state dict, whose keys start with ``model.`` and whose
``_extra_state`` holds the ModelConfig (see ``VTPComposerModel.get_extra_state``), so a
checkpoint is enough to rebuild the trained :class:`model.UnifiedMAE`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model import ModelConfig, UnifiedMAE

__all__ = ["load_trained_model", "load_data_settings"]


def _extra_state(checkpoint: dict) -> dict:
    state = checkpoint.get("state", {}).get("model") if isinstance(checkpoint, dict) else None
    return (state or {}).get("_extra_state") or {}


def load_data_settings(path: str | Path) -> dict:
    """How the checkpoint's training clips were sampled, resized and captions tokenized
    (sampler, stride, sparse_clips, text_max_length, tokenizer_path, interpolation); empty for
    older checkpoints."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return dict(_extra_state(checkpoint).get("data_settings") or {})


def load_trained_model(path: str | Path, config: ModelConfig | None = None) -> UnifiedMAE:
    """The UnifiedMAE of a `vtp train` checkpoint, in eval mode, on the CPU.

    Args:
        path: a Composer checkpoint (``ep*-ba*-rank0.pt`` or ``latest-rank0.pt``).
        config: the model configuration, needed only for checkpoints that do not carry it.

    Raises:
        ValueError: the file is not a training checkpoint, or it carries no configuration and
            none was given.
    """
    # Composer checkpoints hold Python objects besides tensors: only load files you trust.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state", {}).get("model") if isinstance(checkpoint, dict) else None
    if state is None:
        raise ValueError(f"{path} is not a Composer training checkpoint (no state.model)")
    stored = (state.get("_extra_state") or {}).get("model_config")
    if config is None and stored is None:
        raise ValueError(f"{path} carries no model configuration; pass config=")
    net = UnifiedMAE(config or ModelConfig.from_dict(stored))
    weights = {k.removeprefix("model."): v for k, v in state.items() if k != "_extra_state"}
    net.load_state_dict(weights)
    return net.eval()
