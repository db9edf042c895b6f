"""Figures of a pretraining run: loss curves from Composer's file log, and MVM reconstructions.

Both read only what already exists: the loss terms Composer's ``FileLogger`` writes on every
batch (``[metric][batch=N]: loss/train/<term>: value``) and a trained :class:`model.UnifiedMAE`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from recipes.plots import plot_losses

__all__ = ["read_file_log", "plot_losses", "reconstruct", "plot_reconstructions"]

_METRIC = re.compile(r"^\[metric\]\[batch=(\d+)\]: (loss/train/\w+): (\S+)")


def read_file_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """The per-batch loss terms of a Composer file log: ``{term: [(step, value), ...]}``.

    Args:
        path: a log written by ``composer.loggers.FileLogger``.

    Raises:
        ValueError: the log holds no ``loss/train/...`` metric.
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for line in Path(path).read_text().splitlines():
        match = _METRIC.match(line)
        if match:
            step, name, value = match.groups()
            term = name.removeprefix("loss/train/")
            curves.setdefault(term, []).append((int(step), float(value)))
    if not curves:
        raise ValueError(f"{path} holds no loss/train/... metrics (was the file logger on?)")
    return curves


@torch.no_grad()
def reconstruct(model, batch: Mapping[str, torch.Tensor],
                pred: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """Masked input, reconstruction and target of a batch as [0, 1] videos (B, C, T, H, W).

    The decoder predicts each masked tube's pixels normalised by that tube's own per-channel
    mean and std (VideoMAE's target), so predictions are mapped back to pixels with the
    target tube's statistics: the picture shows the shape the model predicts, at the tube's
    true brightness. Visible tubes are copied from the input; masked ones are grey in the
    masked input.

    Args:
        model: a :class:`model.UnifiedMAE` with an MVM decoder, in eval mode.
        batch: a pipeline batch dict with ``video`` and ``video_mask`` (and text for the
            joint pass of a text model).
        pred: the decoder's output for the batch, when the caller has it (else the model's
            forward pass computes it).
    """
    from model.video import patchify, unpatchify

    c = model.config
    video, mask = batch["video"], batch["video_mask"]
    if pred is None:
        pred = model(batch)["mvm_pred"]
    pred = pred.float()  # (B, N_mask, P*C), masked tokens ascending
    shape = (1, -1, 1, 1, 1)
    std, mean = (torch.tensor(v, device=video.device).view(shape) for v in (c.std, c.mean))
    pixels = video.float() * std + mean
    tubes = patchify(pixels, c.tubelet)  # (B, N, P, C)
    b, n, p, ch = tubes.shape
    mu = tubes.mean(dim=-2, keepdim=True)
    sigma = tubes.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    masked_tubes = tubes[mask].view(b, -1, p, ch)
    recon_tubes = tubes.clone()
    recon_tubes[mask] = (pred.view(b, -1, p, ch) * (sigma[mask].view(b, -1, 1, ch) + 1e-6)
                         + mu[mask].view(b, -1, 1, ch)).view(-1, p, ch)
    hidden = tubes.clone()
    hidden[mask] = torch.full_like(masked_tubes, 0.5).view(-1, p, ch)
    out = [unpatchify(t, c.tubelet, c.grid).clamp(0, 1) for t in (hidden, recon_tubes, tubes)]
    return tuple(out)


def frame_strip(video: torch.Tensor, frames: list[int]) -> np.ndarray:
    """(C, T, H, W) -> (H, len(frames) * (W + 1), C): chosen frames side by side."""
    parts = []
    for t in frames:
        img = video[:, t].permute(1, 2, 0).numpy()
        parts += [img, np.ones((img.shape[0], 1, 3))]
    return np.concatenate(parts[:-1], axis=1)


def plot_reconstructions(masked: torch.Tensor, recon: torch.Tensor, target: torch.Tensor,
                         out: Path, captions: list[str] | None = None,
                         frames_shown: int = 4) -> Path:
    """Rows of clips, columns masked input | reconstruction | target, a few frames each.

    Args:
        masked, recon, target: [0, 1] videos (B, C, T, H, W) from :func:`reconstruct`.
        out: PNG path.
        captions: one caption per clip, printed above its row.
        frames_shown: frames per panel, evenly spaced over the clip.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, _, t = masked.shape[:3]
    frames = sorted({round(i * (t - 1) / max(frames_shown - 1, 1)) for i in range(frames_shown)})
    fig, axes = plt.subplots(b, 3, figsize=(3 * 0.9 * len(frames) * 1.1 + 1, 1.45 * b + 0.4),
                             squeeze=False)
    for row in range(b):
        for col, (name, video) in enumerate((("masked input", masked), ("reconstruction", recon),
                                             ("target", target))):
            ax = axes[row, col]
            ax.imshow(frame_strip(video[row], frames), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{name} (frames {', '.join(map(str, frames))})", fontsize=8)
        if captions:
            label = "\n".join(wrap_lines(captions[row], 28))
            axes[row, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def wrap_lines(text: str, width: int) -> list[str]:
    """Up to three lines of at most ``width`` characters, broken between words."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line][:3]
