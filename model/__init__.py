"""SimVTP's unified masked video-text autoencoder in plain PyTorch (no training engine here)."""

from __future__ import annotations

import importlib

# Loaded on first use: recipe validation reads model.config, and `vtp train`/`vtp eval` must
# answer a usage error before torch takes seconds to import.
_EXPORTS = {
    "ModelConfig": "model.config", "model_config": "model.config", "UnifiedMAE": "model.unified",
    "flops_per_sample": "model.flops", "flops_per_batch": "model.flops",
    "export_encoder": "model.checkpoint", "load_exported_encoder": "model.checkpoint",
    "gather_features": "model.losses", "vtc_loss": "model.losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
