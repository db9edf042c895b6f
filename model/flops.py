"""Analytic training FLOPs (multiply-add = 2 FLOPs), for throughput and MFU reporting.

Counts the matmuls that dominate: tubelet embedding, every encoder pass the model runs (see
``model.unified``: joint, video-only, text-only, mismatched VTM pairs, the momentum encoder's
passes with a VTC queue), the video decoder and the MLM head. Backward is counted as twice the
forward, so training = 3x forward, except for the momentum encoder, which runs forward only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import ModelConfig

__all__ = ["forward_flops", "flops_per_sample", "flops_per_batch"]

FORWARD_ONLY = ("momentum_video", "momentum_text")  # parts with no backward pass


def transformer_flops(tokens: int, width: int, depth: int, mlp_ratio: float) -> float:
    """Forward FLOPs of ``depth`` pre-LN blocks over ``tokens`` tokens (one sample)."""
    linear = 2 * tokens * (4 + 2 * mlp_ratio) * width * width  # qkv, proj, fc1, fc2
    attention = 2 * 2 * tokens * tokens * width  # q k^T and attn v
    return depth * (linear + attention)


def forward_flops(config: ModelConfig, *, num_visible: int | None = None, text_len: int = 32,
                  num_mlm: float | None = None) -> dict[str, float]:
    """Forward FLOPs per sample, by part.

    Args:
        config: the model configuration (its active terms decide which passes run).
        num_visible: visible tubes per sample (default: from ``config.video_mask_ratio``).
        text_len: padded text length (attention runs over padding too).
        num_mlm: MLM-selected tokens per sample (default: ``text_mask_ratio * text_len``).
    """
    c, terms = config, config.active_terms
    n = c.num_tokens
    nv = n - c.num_masked if num_visible is None else num_visible
    num_mlm = c.text_mask_ratio * text_len if num_mlm is None else num_mlm

    def enc(tokens: int) -> float:
        return transformer_flops(tokens, c.width, c.depth, c.mlp_ratio)

    parts = {"tubelet_embed": 2.0 * n * c.tube_dim * c.width}
    if not c.use_text:
        parts["encoder_video"] = enc(nv)
    else:
        if c.joint_pass:
            parts["encoder_joint"] = enc(nv + text_len)
        if c.single_passes:
            vtc_video = n if c.vtc_inputs == "full" else nv
            parts["encoder_video"] = enc(vtc_video)
            parts["encoder_text"] = enc(text_len)
            if c.vtc_queue and "vtc" in terms:
                parts["momentum_video"] = enc(vtc_video)
                parts["momentum_text"] = enc(text_len)
        if "vtm" in terms:
            parts["encoder_vtm_negatives"] = enc(nv + text_len)
        if "mlm" in terms:
            parts["mlm_head"] = 2.0 * num_mlm * c.width * c.vocab_size
    if "mvm" in terms:
        parts["decoder"] = (
            2.0 * nv * c.width * c.decoder_width
            + transformer_flops(n, c.decoder_width, c.decoder_depth, c.mlp_ratio)
            + 2.0 * (n - nv) * c.decoder_width * c.tube_dim)
    return parts


def flops_per_sample(config: ModelConfig, **kwargs) -> float:
    """Training FLOPs (forward + backward = 3x forward, the momentum encoder's forward once)
    per sample; kwargs as :func:`forward_flops`."""
    parts = forward_flops(config, **kwargs)
    return sum(v if k in FORWARD_ONLY else 3.0 * v for k, v in parts.items())


def flops_per_batch(config: ModelConfig, batch: Mapping[str, torch.Tensor]) -> float:
    """Training FLOPs of one batch, from its actual mask, padded text length and MLM count.

    Args:
        config: the model configuration.
        batch: the pipeline's batch dict.
    """
    mask = batch["video_mask"]
    size = mask.shape[0]
    kwargs = {"num_visible": int(mask.shape[1] - mask[0].sum())}
    if config.use_text:
        labels = batch["mlm_labels"]
        kwargs["text_len"] = int(labels.shape[1])
        kwargs["num_mlm"] = float((labels != -100).sum()) / size
    return size * flops_per_sample(config, **kwargs)
