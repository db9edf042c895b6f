"""Loss and learning-rate curves of a run, drawn with matplotlib (Agg, no display needed).

Shared by `vtp train` (recipes/curves.py draws the run's curves beside its checkpoints) and
the demo report (commands/figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["plot_losses"]


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what they have)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    return (sums[idx] - sums[np.maximum(idx - window, 0)]) / np.minimum(idx, window)


def plot_losses(curves: Mapping[str, list[tuple[int, float]]], out: Path,
                chance: Mapping[str, float] | None = None, title: str = "") -> Path:
    """One panel per loss term against step: raw values faint, a moving average on top.

    Args:
        curves: ``{term: [(step, value), ...]}`` (see :func:`read_file_log`).
        out: PNG path.
        chance: optional loss of an untrained model per term (drawn dashed), e.g. VTC's
            ``2 ln B`` and VTM's ``ln 2``.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(curves, key=lambda n: (n != "total", n))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = np.array(curves[name]).T
        ax.plot(steps, values, color="tab:blue", alpha=0.25, lw=0.8)
        window = max(1, len(values) // 30)
        ax.plot(steps, _smooth(values, window), color="tab:blue", lw=1.6,
                label=f"mean of {window}" if window > 1 else None)
        if chance and name in chance:
            ax.axhline(chance[name], color="tab:red", ls="--", lw=1,
                       label=f"chance {chance[name]:.2f}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
