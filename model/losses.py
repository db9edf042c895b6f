"""The four SimVTP losses and the VTC distributed contract (open_clip's ``gather_features`` style).

Every function is free of model state: the model computes features, the loss owns the
similarity, the labels and, for VTC across ranks, the gather.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = [
    "mvm_loss", "mlm_loss", "vtc_loss", "vtm_loss", "gather_features", "sample_negatives",
]


def _zero(t: torch.Tensor) -> torch.Tensor:
    # A zero that keeps ``t`` in the graph, so DDP sees every parameter used.
    return t.float().sum() * 0.0


def mvm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and target tubes, averaged over masked tubes only, in fp32.

    Args:
        pred: (B, N_mask, P) decoder output for the masked tubes, in token order.
        target: (B, N, P) target of every tube (see ``model.video.tube_target``).
        mask: bool (B, N), True = masked.
    """
    if pred.shape[1] == 0:
        return _zero(pred)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        picked = target[mask].reshape(pred.shape).float()
        return F.mse_loss(pred.float(), picked)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose label is not -100 (the unmasked ones are ignored).

    Args:
        logits: (..., V) vocabulary logits.
        labels: (...) original ids at selected positions, -100 elsewhere.
    """
    if not bool((labels != -100).any()):
        return _zero(logits)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=-100)


def gather_features(
    video: torch.Tensor, text: torch.Tensor, *, rank: int, world_size: int,
    gather_with_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather video and text features from every rank, concatenated in rank order.

    Without ``gather_with_grad`` the gathered copies carry no gradient, so the local tensors
    go back into slot ``rank``: each rank still trains through its own features.

    Args:
        video, text: (B, D) local features.
        rank, world_size: this process's place in the default process group.
        gather_with_grad: backpropagate through the gather (``torch.distributed.nn``).
    """
    if gather_with_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(video), 0), torch.cat(all_gather(text), 0)
    out = []
    for local in (video, text):
        parts = [torch.zeros_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.detach())
        parts[rank] = local
        out.append(torch.cat(parts, 0))
    return out[0], out[1]


def vtc_loss(
    video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *, gather: bool = False,
    gather_with_grad: bool = False, rank: int = 0, world_size: int = 1,
    candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric video-text contrastive loss (Frozen's NormSoftmax, as in SimVTP).

    L = CE(scale * t v^T) + CE(scale * v t^T) on cosine similarities (the sum of the two
    directions, as released). With ``gather`` the local features are scored against the
    features of every rank and the labels are offset by ``B * rank``.

    Args:
        video, text: (B, D) features (normalised here).
        logit_scale: scalar 1 / temperature.
        gather: all-gather features across ranks (needs ``world_size > 1`` to matter).
        gather_with_grad: see :func:`gather_features`.
        rank, world_size: this process's place in the process group.
        candidates: (video, text) (B + K, D) normalised features that text and video
            queries are scored against instead of the batch's own: the batch's first (the
            positives), then K extra negatives (ALBEF: a momentum encoder's features of the
            batch and its queue). No gradient flows into them.
        exclude: optional bool (B, B + K), True where a candidate is not scored for that
            query (a queued copy of the query's own sample).
    """
    with torch.autocast(device_type=video.device.type, enabled=False):
        video, text = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
        all_video, all_text = video, text
        if gather and world_size > 1:
            all_video, all_text = gather_features(
                video, text, rank=rank, world_size=world_size, gather_with_grad=gather_with_grad)
        offset = video.shape[0] * rank if all_video.shape[0] > video.shape[0] else 0
        if candidates is not None:
            all_video, all_text = (c.detach().float() for c in candidates)
        labels = torch.arange(video.shape[0], device=video.device) + offset
        t2v = logit_scale * text @ all_video.T
        v2t = logit_scale * video @ all_text.T
        if exclude is not None:
            t2v, v2t = (x.masked_fill(exclude, float("-inf")) for x in (t2v, v2t))
        return F.cross_entropy(t2v, labels) + F.cross_entropy(v2t, labels)


def sample_negatives(
    batch_size: int, generator: torch.Generator, similarity: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each text i, the index j != i of the video it is paired with as a VTM negative.

    Args:
        batch_size: B (at least 2).
        generator: a CPU ``torch.Generator``: the only randomness used.
        similarity: optional (B, B) text-to-video scores; when given, j is drawn with
            probability softmax(similarity[i]) over j != i (hard negatives), else uniformly.
    """
    if batch_size < 2:
        raise ValueError("VTM needs at least 2 samples per batch to draw in-batch negatives")
    if similarity is None:
        shift = torch.randint(1, batch_size, (batch_size,), generator=generator)
        return (torch.arange(batch_size) + shift) % batch_size
    scores = similarity.detach().float().cpu().clone().fill_diagonal_(float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def vtm_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Matched (label 1) vs mismatched (label 0) classification, CE over [pos ; neg].

    Args:
        pos_logits, neg_logits: (B, 2) head outputs of matched and mismatched pairs.
    """
    labels = torch.cat([torch.ones(len(pos_logits)), torch.zeros(len(neg_logits))])
    with torch.autocast(device_type=pos_logits.device.type, enabled=False):
        logits = torch.cat([pos_logits, neg_logits]).float()
        return F.cross_entropy(logits, labels.long().to(logits.device))
