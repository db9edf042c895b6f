"""A picture of text-to-video retrieval: for a few held-out captions, the top-5 clips ranked.

Each row is one query caption; its five columns are the clips the model ranks highest, a few
frames each, framed green when the clip is the one the caption describes. The ranking is the
zero-shot evaluation's (same features, same view), so the grid shows what R@1 and R@5 count.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from commands.figures import frame_strip, wrap_lines

__all__ = ["rank_clips", "plot_retrieval_grid", "retrieval_grid"]


@torch.no_grad()
def rank_clips(checkpoint: str | Path, shards: Path, batch_size: int = 32):
    """Keys, [0, 1] videos (N, C, T, H, W) and the text-to-video similarity matrix of the
    held-out shards, as the zero-shot evaluation computes them (centre view, no masks)."""
    from evaluation.evaluate import EvalConfig, eval_data_config
    from pipeline import BatchBuilder
    from pipeline.loader import build_source
    from recipes.checkpoint import load_data_settings, load_trained_model

    model = load_trained_model(checkpoint).eval()
    settings = load_data_settings(checkpoint)
    data = eval_data_config(model, shards, EvalConfig(data=str(shards), out="",
                                                      batch_size=batch_size), settings)
    data = replace(data, shuffle=False, drop_last=False, view=0, video_mask_ratio=0.0,
                   text_mask_ratio=0.0)
    loader = torch.utils.data.DataLoader(build_source(data), batch_size=batch_size,
                                         collate_fn=BatchBuilder(data))
    keys, videos, video_feats, text_feats = [], [], [], []
    c = model.config
    shape = (1, -1, 1, 1, 1)
    for batch in loader:
        video = batch["video"].float()
        video_feats.append(model.encode_video(video).float())
        text_feats.append(model.encode_text(batch["text_ids"], batch["text_mask"]).float())
        pixels = video * torch.tensor(c.std).view(shape) + torch.tensor(c.mean).view(shape)
        videos.append(pixels.clamp(0, 1))
        keys.extend(batch["keys"])
    v = torch.nn.functional.normalize(torch.cat(video_feats), dim=-1)
    t = torch.nn.functional.normalize(torch.cat(text_feats), dim=-1)
    return keys, torch.cat(videos), t @ v.T


def plot_retrieval_grid(videos: torch.Tensor, sims: torch.Tensor, captions: list[str],
                        queries: list[int], out: Path, k: int = 5, frames_shown: int = 3) -> Path:
    """Rows = ``queries`` (indices into captions), columns = the top-``k`` clips by ``sims``.

    Clip i is the one caption i describes; it is framed green where it appears.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = videos.shape[2]
    frames = sorted({round(i * (t - 1) / max(frames_shown - 1, 1)) for i in range(frames_shown)})
    fig, axes = plt.subplots(len(queries), k, figsize=(k * 2.2 + 1.5, 1.25 * len(queries) + 0.5),
                             squeeze=False)
    for row, q in enumerate(queries):
        order = torch.argsort(sims[q], descending=True).tolist()
        rank = order.index(q) + 1
        for col, clip in enumerate(order[:k]):
            ax = axes[row, col]
            ax.imshow(frame_strip(videos[clip], frames), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            hit = clip == q
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen" if hit else "lightgrey")
                spine.set_linewidth(4 if hit else 1)
            ax.set_title(_short(captions[clip]), fontsize=5, color="green" if hit else "black")
        label = "\n".join([*wrap_lines(captions[q], 30), f"(true clip: rank {rank})"])
        axes[row, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"held-out text-to-video retrieval: top {k} clips per caption "
                 f"(frames {', '.join(map(str, frames))}; green = the captioned clip)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _short(caption: str) -> str:
    return "\n".join(wrap_lines(caption.replace(" on a ", " / "), 40))


def retrieval_grid(checkpoint: str | Path, shards: Path, test_json: Path, out: Path,
                   num_queries: int = 4, seed: int = 0) -> dict:
    """Ranks the held-out clips and draws the grid for ``num_queries`` captions, chosen at
    random (seeded) so the picture is not a hand-picked success; returns what it shows."""
    keys, videos, sims = rank_clips(checkpoint, shards)
    entries = json.loads(Path(test_json).read_text())
    by_key = {str(e.get("video_id") or Path(e["video"]).stem): e["caption"] for e in entries}
    captions = [by_key.get(k, "") for k in keys]
    rng = np.random.default_rng(seed)
    count = min(num_queries, len(keys))
    queries = sorted(rng.choice(len(keys), size=count, replace=False).tolist())
    plot_retrieval_grid(videos, sims, captions, queries, out)
    order = [torch.argsort(sims[q], descending=True).tolist() for q in queries]
    ranks = [ranked.index(q) + 1 for ranked, q in zip(order, queries, strict=True)]
    return {"png": str(out), "queries": [captions[q] for q in queries], "ranks": ranks,
            "keys": keys, "top1": sims.argmax(dim=1).tolist()}
