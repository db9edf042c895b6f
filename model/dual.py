"""SimVTP's fine-tuning model: a dual encoder made of two copies of the pretrained encoder.

As released (S ``modeling_finetune.py``): a video copy and a text copy of the unified encoder,
both initialised from the pretrained weights, each ending in a *fresh* LayerNorm (``fc_norm``)
on the mean of all its output tokens. The pretrained final norm is not used (VideoMAE's
mean-pooling heads replace it by ``fc_norm``), and text pooling includes padding when the
pretrained model did (``pool_text_padding``, True as released). Training is contrastive only
(``model.losses.vtc_loss`` at a fixed temperature), on in-batch negatives.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from .config import ModelConfig
from .unified import Encoder, UnifiedMAE, mean_pool, padding_or_none

__all__ = ["DualEncoder"]


class DualEncoder(nn.Module):
    """Separate video and text encoders, each followed by ``fc_norm`` on the token mean.

    Args:
        config: the pretrained model's configuration (shapes, eps, text pooling).
        video_encoder: the video copy (its text embeddings are dropped).
        text_encoder: the text copy (its tube embedding is dropped).
    """

    def __init__(self, config: ModelConfig, video_encoder: Encoder, text_encoder: Encoder) -> None:
        super().__init__()
        if text_encoder.text_embed is None:
            raise ValueError("the text encoder has no text embeddings (use_text=False model)")
        self.config = config
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        # Unused halves would sit in the optimizer without gradients (and trip DDP).
        self.video_encoder.text_embed = None
        self.text_encoder.patch_embed = None
        for encoder in (self.video_encoder, self.text_encoder):
            encoder.norm = nn.Identity()
            encoder.set_drop_path(config.drop_path)
        self.video_fc_norm = nn.LayerNorm(config.width, eps=config.ln_eps)
        self.text_fc_norm = nn.LayerNorm(config.width, eps=config.ln_eps)

    @classmethod
    def from_unified(cls, model: UnifiedMAE, drop_path: float | None = None) -> DualEncoder:
        """Two independent copies of ``model.encoder`` (``model`` itself is left untouched).

        Args:
            model: the pretrained model.
            drop_path: stochastic depth of the copies (``ModelConfig.drop_path``); None keeps
                the pretrained model's.
        """
        config = model.config if drop_path is None else replace(model.config, drop_path=drop_path)
        return cls(config, copy.deepcopy(model.encoder), copy.deepcopy(model.encoder))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Unmasked video (B, C, T, H, W) -> (B, D) features."""
        out = self.video_encoder(self.video_encoder.embed_video(video))
        return self.video_fc_norm(out.mean(dim=1))

    def encode_text(self, ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Text ids and attention mask (B, L) -> (B, D) features."""
        out = self.text_encoder(self.text_encoder.embed_text(ids), padding_or_none(text_mask))
        pooled = mean_pool(out, None if self.config.pool_text_padding else text_mask)
        return self.text_fc_norm(pooled)

    def forward(self, video: torch.Tensor, ids: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(video features, text features), each (B, D), not normalised."""
        return self.encode_video(video), self.encode_text(ids, text_mask)
