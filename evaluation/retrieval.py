"""Text-to-video and video-to-text retrieval metrics from a similarity matrix.

Ranks are 1-based and ties are broken pessimistically: a query whose true match ties with
another candidate gets the worse rank, so a model that scores everything equally earns
chance-level numbers instead of a perfect R@1 (the optimistic convention of Frozen's
metric.py would report 100%).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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
    return rank_metrics(ranks(sims.float()), prefix)


def rank_metrics(r: torch.Tensor, prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank from the 1-based ranks ``r`` of the queries."""
    r = r.double()
    metrics = {f"{prefix}_r{k}": float((r <= k).double().mean() * 100) for k in (1, 5, 10)}
    metrics[f"{prefix}_medr"] = float(r.quantile(0.5))  # np.median, as Frozen/SimVTP report it
    metrics[f"{prefix}_meanr"] = float(r.mean())
    return metrics


def galleries(keys: Sequence[str], size: int | None) -> list[list[int]]:
    """Disjoint galleries of about ``size`` clips each (all clips in one when ``size`` is None).

    R@1 on a gallery of 200 counts 200 hits or misses, so two models (or two seeds) differ by
    a few clips by chance alone; ranking each query within its own gallery of a larger
    held-out split keeps the task as hard as on 200 clips and counts every query. Clips are
    ordered by a hash of their key, so neither shard order nor generation order groups
    similar clips, and cut into ``round(n / size)`` parts that differ by at most one clip.
    """
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(str(keys[i]).encode()).digest())
    parts = 1 if size is None else max(1, round(len(keys) / size))
    return [part.tolist() for part in torch.tensor_split(torch.tensor(order), parts)]


def text_video_metrics(text_features: torch.Tensor, video_features: torch.Tensor,
                       groups: list[list[int]] | None = None) -> dict[str, float]:
    """Both directions from L2-normalised features; text i describes video i.

    Args:
        text_features, video_features: (n, D) features of pairs.
        groups: disjoint galleries (see :func:`galleries`); each query is ranked among the
            clips (or captions) of its own gallery only. None: one gallery of all n.

    Returns t2v_* and v2t_* metrics over every query, ``chance_r1`` (percent, averaged over
    queries), ``n`` (queries), ``galleries`` and ``gallery_size`` (the largest).
    """
    if text_features.shape[0] != video_features.shape[0]:
        raise ValueError(
            f"{text_features.shape[0]} captions but {video_features.shape[0]} videos: "
            "retrieval pairs caption i with video i"
        )
    n = text_features.shape[0]
    groups = groups if groups is not None else [list(range(n))]
    if sorted(i for g in groups for i in g) != list(range(n)):
        raise ValueError(f"galleries must cover each of the {n} pairs exactly once")
    t = torch.nn.functional.normalize(text_features.float(), dim=-1)
    v = torch.nn.functional.normalize(video_features.float(), dim=-1)
    t2v, v2t = [], []
    for group in groups:
        sims = t[group] @ v[group].T
        t2v.append(ranks(sims))
        v2t.append(ranks(sims.T))
    return {
        **rank_metrics(torch.cat(t2v), "t2v"),
        **rank_metrics(torch.cat(v2t), "v2t"),
        "chance_r1": 100.0 * len(groups) / n,
        "n": n,
        "galleries": len(groups),
        "gallery_size": max(len(g) for g in groups),
    }
