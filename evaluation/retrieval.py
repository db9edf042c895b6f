"""Text-to-video and video-to-text retrieval metrics from a similarity matrix.

Ranks are 1-based and ties are broken pessimistically: a query whose true match ties with
another candidate gets the worse rank, so a model that scores everything equally earns
chance-level numbers instead of a perfect R@1 (the optimistic convention of Frozen's
metric.py would report 100%).
"""

from __future__ import annotations

import torch


def ranks(sims: torch.Tensor) -> torch.Tensor:
    """1-based rank of the true match (the diagonal) for each query row, ties counted against it.

    Args:
        sims: (n, n) similarities; row i is query i, column i its true match.
    """
    if sims.ndim != 2 or sims.shape[0] != sims.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got shape {tuple(sims.shape)}")
    truth = sims.diagonal().unsqueeze(1)
    at_least_as_good = (sims >= truth).sum(dim=1)  # includes the true match itself
    return at_least_as_good


def retrieval_metrics(sims: torch.Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank for the queries in the rows of ``sims``."""
    r = ranks(sims.float()).double()
    metrics = {f"{prefix}_r{k}": float((r <= k).double().mean() * 100) for k in (1, 5, 10)}
    metrics[f"{prefix}_medr"] = float(r.quantile(0.5))  # np.median, as Frozen/SimVTP report it
    metrics[f"{prefix}_meanr"] = float(r.mean())
    return metrics


def text_video_metrics(text_features: torch.Tensor,
                       video_features: torch.Tensor) -> dict[str, float]:
    """Both directions from L2-normalised features; text i describes video i.

    Returns t2v_* and v2t_* metrics, ``chance_r1`` (percent) and ``n``.
    """
    if text_features.shape[0] != video_features.shape[0]:
        raise ValueError(
            f"{text_features.shape[0]} captions but {video_features.shape[0]} videos: "
            "retrieval pairs caption i with video i"
        )
    t = torch.nn.functional.normalize(text_features.float(), dim=-1)
    v = torch.nn.functional.normalize(video_features.float(), dim=-1)
    sims = t @ v.T
    n = sims.shape[0]
    return {
        **retrieval_metrics(sims, "t2v"),
        **retrieval_metrics(sims.T, "v2t"),
        "chance_r1": 100.0 / n,
        "n": n,
    }
