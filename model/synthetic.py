"""Random batches in the pipeline's batch-dict format, for tests and benchmarks (torch only)."""

from __future__ import annotations

import torch

from .config import ModelConfig

__all__ = ["random_batch", "tube_mask"]

CLS, SEP, MASK, PAD = 101, 102, 103, 0


def tube_mask(config: ModelConfig, batch_size: int, ratio: float,
              generator: torch.Generator) -> torch.Tensor:
    """Bool (B, N): round(ratio*H'*W') random cells per sample, the same on every time slice."""
    gt, gh, gw = config.grid
    cells = torch.rand(batch_size, gh * gw, generator=generator).argsort(dim=1)
    masked = cells < round(ratio * gh * gw)
    return masked.repeat(1, gt)


def random_batch(config: ModelConfig, batch_size: int, *, text_len: int = 16,
                 mask_ratio: float | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> dict:
    """A batch dict with random video, a tube mask, and captions of random length.

    Args:
        config: decides the video shape and mask grid.
        batch_size: B.
        text_len: padded caption length L (captions use L/2..L tokens incl. [CLS]/[SEP]).
        mask_ratio: tube-mask ratio (default ``config.video_mask_ratio``).
        seed: seeds the only generator used.
        device: where the tensors go.
    """
    g = torch.Generator().manual_seed(seed)
    ratio = config.video_mask_ratio if mask_ratio is None else mask_ratio
    c, f, s = config.in_chans, config.num_frames, config.image_size
    batch = {
        "video": torch.randn(batch_size, c, f, s, s, generator=g),
        "video_mask": tube_mask(config, batch_size, ratio, g),
        "keys": [f"{seed}-{i}" for i in range(batch_size)],
    }
    lengths = torch.randint(max(3, text_len // 2), text_len + 1, (batch_size,), generator=g)
    pos = torch.arange(text_len)
    real = pos[None] < lengths[:, None]
    ids = torch.randint(1000, min(config.vocab_size, 30000), (batch_size, text_len), generator=g)
    ids = torch.where(real, ids, PAD)
    ids[:, 0] = CLS
    ids[torch.arange(batch_size), lengths - 1] = SEP
    special = (pos[None] == 0) | (pos[None] == lengths[:, None] - 1) | ~real
    picked = (torch.rand(batch_size, text_len, generator=g) < config.text_mask_ratio) & ~special
    batch.update(
        text_ids=ids, text_mask=real.long(),
        mlm_ids=torch.where(picked, MASK, ids),
        mlm_labels=torch.where(picked, ids, -100),
    )
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
