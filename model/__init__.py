"""SimVTP's unified masked video-text autoencoder in plain PyTorch (no training engine here)."""

from .checkpoint import (
    export_encoder,
    load_bert_embeddings,
    load_exported_encoder,
    load_videomae_checkpoint,
)
from .config import ModelConfig, model_config
from .flops import flops_per_batch, flops_per_sample
from .losses import gather_features, vtc_loss
from .unified import UnifiedMAE

__all__ = [
    "ModelConfig", "model_config", "UnifiedMAE", "flops_per_sample", "flops_per_batch",
    "load_videomae_checkpoint", "load_bert_embeddings", "export_encoder", "load_exported_encoder",
    "gather_features",
    "vtc_loss",
]
