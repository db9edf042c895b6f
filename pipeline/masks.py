"""Video token masks (tube, random, frame), vectorised on the batch's device.

Each function returns ``bool (B, N)`` with True = masked, tokens in (t, h, w) row-major order,
and the same number of masked tokens in every sample, so the encoder sees equal-length inputs.
"""

from __future__ import annotations

import torch


def _exact_choice(batch: int, cells: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``bool (batch, cells)`` with exactly ``count`` True per row, uniformly at random."""
    noise = torch.rand(batch, cells, generator=generator, device=generator.device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < count


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float,
              generator: torch.Generator) -> torch.Tensor:
    """VideoMAE tube masking: ``round(ratio*H'W')`` cells, the same on every time slice.

    Args:
        batch: samples (B).
        grid: (T', H', W') token grid.
        ratio: masked fraction.
        generator: a torch.Generator on the batch's device.
    """
    steps, height, width = grid
    cells = _exact_choice(batch, height * width, round(ratio * height * width), generator)
    return cells[:, None, :].expand(batch, steps, height * width).reshape(batch, -1)


def random_mask(batch: int, grid: tuple[int, int, int], ratio: float,
                generator: torch.Generator) -> torch.Tensor:
    """Per-token masking: exactly ``round(ratio*N)`` tokens of each sample.

    Args:
        batch: samples (B).
        grid: (T', H', W') token grid.
        ratio: masked fraction.
        generator: a torch.Generator on the batch's device.
    """
    tokens = grid[0] * grid[1] * grid[2]
    return _exact_choice(batch, tokens, round(ratio * tokens), generator)


def frame_mask(batch: int, grid: tuple[int, int, int], ratio: float,
               generator: torch.Generator) -> torch.Tensor:
    """Whole time slices masked: exactly ``round(ratio*T')`` of the T' slices of each sample.

    Args:
        batch: samples (B).
        grid: (T', H', W') token grid.
        ratio: masked fraction.
        generator: a torch.Generator on the batch's device.
    """
    steps, height, width = grid
    slices = _exact_choice(batch, steps, round(ratio * steps), generator)
    return slices[:, :, None].expand(batch, steps, height * width).reshape(batch, -1)


MASKS = {"tube": tube_mask, "random": random_mask, "frame": frame_mask}


def video_mask(kind: str, batch: int, grid: tuple[int, int, int], ratio: float,
               generator: torch.Generator) -> torch.Tensor:
    """The mask named ``kind`` (tube, random or frame); see the functions above.

    Args:
        kind: ``tube``, ``random`` or ``frame``.
        batch: samples (B).
        grid: (T', H', W') token grid.
        ratio: masked fraction.
        generator: a torch.Generator on the batch's device.
    """
    if kind not in MASKS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {sorted(MASKS)}")
    return MASKS[kind](batch, grid, ratio, generator)
