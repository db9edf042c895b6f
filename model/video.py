"""Video side: tubelet embedding, tube (un)patchify and the per-tube normalised pixel target."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TubeletEmbed", "patchify", "unpatchify", "tube_target", "visible_and_masked_index"]


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = tubelet: (B, C, T, H, W) -> (B, N, D), (t, h, w) order.

    Args:
        tubelet: (tt, ph, pw).
        in_chans: input channels.
        dim: token width.
    """

    def __init__(self, tubelet: tuple[int, int, int], in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=tubelet, stride=tubelet)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)


def patchify(video: torch.Tensor, tubelet: tuple[int, int, int]) -> torch.Tensor:
    """Cut (B, C, T, H, W) into tubes: (B, N, tt*ph*pw, C), pixel-major, tokens in (t, h, w)
    order."""
    b, c, t, h, w = video.shape
    tt, ph, pw = tubelet
    x = video.reshape(b, c, t // tt, tt, h // ph, ph, w // pw, pw)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, -1, tt * ph * pw, c)


def unpatchify(tubes: torch.Tensor, tubelet: tuple[int, int, int],
               grid: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify` (tubes may be flattened to (B, N, tt*ph*pw*C))."""
    b = tubes.shape[0]
    tt, ph, pw = tubelet
    gt, gh, gw = grid
    x = tubes.reshape(b, gt, gh, gw, tt, ph, pw, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, -1, gt * tt, gh * ph, gw * pw)


def tube_target(video: torch.Tensor, tubelet: tuple[int, int, int], mean: tuple[float, ...],
                std: tuple[float, ...], normalize: bool = True) -> torch.Tensor:
    """The MVM regression target of every tube, in fp32: (B, N, tt*ph*pw*C).

    Undo the input normalisation to get pixels in [0, 1], cut tubes, then (VideoMAE's
    ``normalize_target``) normalise each channel inside each tube by its mean and unbiased
    std + 1e-6; flattened pixel-major with channels interleaved.

    Args:
        video: (B, C, T, H, W) normalised with ``mean``/``std``.
        tubelet: (tt, ph, pw).
        mean, std: per-channel normalisation of ``video``.
        normalize: per-tube normalisation (False regresses raw [0, 1] pixels).
    """
    video = video.float()
    shape = (1, -1, 1, 1, 1)
    mean_t = torch.tensor(mean, device=video.device).view(shape)
    std_t = torch.tensor(std, device=video.device).view(shape)
    tubes = patchify(video * std_t + mean_t, tubelet)
    if normalize:
        mu = tubes.mean(dim=-2, keepdim=True)
        sigma = tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        tubes = (tubes - mu) / (sigma + 1e-6)
    return tubes.flatten(2)


def visible_and_masked_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices of visible and masked tubes, each ascending: (B, N_vis), (B, N_mask).

    Args:
        mask: bool (B, N), True = masked; every row must mask the same number of tokens.
    """
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"video_mask must be a bool (B, N) tensor, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    counts = mask.sum(dim=1).tolist()
    if len(set(counts)) > 1:
        raise ValueError(f"every sample must mask the same number of tokens, "
                         f"got {sorted(set(counts))}")
    # A stable sort of the mask puts visible tokens (False) first, each group in index order.
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    num_masked = counts[0]
    return order[:, : mask.shape[1] - num_masked], order[:, mask.shape[1] - num_masked:]
