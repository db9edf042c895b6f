"""The four losses as free functions, and the VTC cross-rank contract with a fake all-gather."""

from __future__ import annotations

import math
import zlib

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model import UnifiedMAE, gather_features, model_config, vtc_loss
from model.losses import mlm_loss, mvm_loss, sample_negatives, vtm_loss
from model.synthetic import random_batch
from model.video import tube_target, visible_and_masked_index


def test_mvm_loss_ignores_visible_tubes_of_the_target_video():
    config = model_config("tiny")
    batch = random_batch(config, 2, seed=0)
    video, mask = batch["video"], batch["video_mask"]
    pred = torch.randn(2, int(mask[0].sum()), config.tube_dim)

    def loss_of(v: torch.Tensor) -> torch.Tensor:
        return mvm_loss(pred, tube_target(v, config.tubelet, config.mean, config.std), mask)

    # Perturb every pixel of the visible tubes only (tubes are disjoint, so this is exact).
    tt, ph, pw = config.tubelet
    gt, gh, gw = config.grid
    visible = (~mask).reshape(2, 1, gt, 1, gh, 1, gw, 1).expand(2, 3, gt, tt, gh, ph, gw, pw)
    noise = torch.randn_like(video) * visible.reshape(video.shape)
    assert noise.abs().sum() > 0
    assert torch.equal(loss_of(video), loss_of(video + noise))
    # ...while perturbing a masked tube does change it.
    masked = (~visible).reshape(video.shape)
    assert not torch.equal(loss_of(video), loss_of(video + torch.randn_like(video) * masked))


def test_mvm_loss_is_mse_over_masked_tokens_in_fp32():
    mask = torch.tensor([[True, False, True]])
    target = torch.tensor([[[1.0, 1.0], [50.0, 50.0], [3.0, 3.0]]])
    pred = torch.zeros(1, 2, 2, dtype=torch.bfloat16)
    loss = mvm_loss(pred, target, mask)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((1 + 1 + 9 + 9) / 4)
    assert mvm_loss(torch.zeros(1, 0, 2), target, torch.zeros(1, 3, dtype=torch.bool)).item() == 0


def test_mlm_loss_ignores_unselected_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, 3, -100, 7, -100], [1, -100, -100, -100, 2]])
    base = mlm_loss(logits, labels)
    noisy = logits.clone()
    noisy[labels == -100] += 100 * torch.randn(int((labels == -100).sum()), 11, generator=g)
    assert torch.equal(base, mlm_loss(noisy, labels))
    picked = labels != -100
    assert base.item() == pytest.approx(F.cross_entropy(logits[picked], labels[picked]).item())
    nothing = torch.full_like(labels, -100)
    assert mlm_loss(logits, nothing).item() == 0


def test_vtc_is_symmetric_and_lowest_on_aligned_pairs():
    g = torch.Generator().manual_seed(0)
    video = torch.randn(6, 16, generator=g)
    text = video + 0.1 * torch.randn(6, 16, generator=g)
    scale = torch.tensor(20.0)
    aligned = vtc_loss(video, text, scale)
    assert aligned.item() == pytest.approx(vtc_loss(text, video, scale).item(), rel=1e-6)
    for shift in range(1, 6):
        assert vtc_loss(video, text.roll(shift, 0), scale) > aligned
    # Matches the released NormSoftmax: sum of both directions' mean log-likelihoods.
    sims = F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T * 20
    want = -(sims.log_softmax(1).diag().mean() + sims.T.log_softmax(1).diag().mean())
    assert aligned.item() == pytest.approx(want.item(), rel=1e-5)
    assert vtc_loss(video, text, scale).item() == pytest.approx(
        vtc_loss(video, text, scale, gather=True, world_size=1).item())


def _fake_all_gather(sources: list[torch.Tensor]):
    """An all_gather whose k-th call fills every rank's slot from ``sources[k]`` (video, text)."""
    calls = iter(sources)

    def all_gather(parts, tensor):
        source = next(calls)
        assert source.shape == (len(parts),) + tensor.shape
        for i in range(len(parts)):
            parts[i].copy_(source[i])
    return all_gather


def test_gather_features_keeps_local_gradients_and_offsets_labels(monkeypatch):
    world, rank, batch = 3, 1, 4
    g = torch.Generator().manual_seed(0)
    every_video = torch.randn(world, batch, 8, generator=g)
    every_text = torch.randn(world, batch, 5, generator=g)
    monkeypatch.setattr(dist, "all_gather", _fake_all_gather([every_video, every_text]))
    video = every_video[rank].clone().requires_grad_()
    text = every_text[rank].clone().requires_grad_()
    all_video, all_text = gather_features(video, text, rank=rank, world_size=world)
    assert all_video.shape == (world * batch, 8) and all_text.shape == (world * batch, 5)
    assert torch.equal(all_video.detach(), every_video.reshape(-1, 8))
    (all_video.sum() + all_text.sum()).backward()
    assert torch.equal(video.grad, torch.ones_like(video))  # local slot carries the gradient
    assert torch.equal(text.grad, torch.ones_like(text))


def test_vtc_with_gather_uses_rank_offset_labels(monkeypatch):
    world, rank, batch, dim = 2, 1, 3, 8
    g = torch.Generator().manual_seed(1)
    every_video = torch.randn(world, batch, dim, generator=g)
    every_text = every_video + 0.5 * torch.randn(world, batch, dim, generator=g)
    monkeypatch.setattr(dist, "all_gather", _fake_all_gather(
        [F.normalize(every_video, dim=-1), F.normalize(every_text, dim=-1)]))
    scale = torch.tensor(3.0)
    video = every_video[rank].clone().requires_grad_()
    loss = vtc_loss(video, every_text[rank], scale, gather=True, rank=rank, world_size=world)
    # Reference: local rows scored against all columns, targets at batch*rank + i.
    v_all = F.normalize(every_video.reshape(-1, dim), dim=-1)
    t_all = F.normalize(every_text.reshape(-1, dim), dim=-1)
    rows = slice(batch * rank, batch * (rank + 1))
    labels = torch.arange(batch) + batch * rank
    want = (F.cross_entropy(scale * t_all[rows] @ v_all.T, labels)
            + F.cross_entropy(scale * v_all[rows] @ t_all.T, labels))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    unshifted = (F.cross_entropy(scale * t_all[rows] @ v_all.T, labels - batch * rank)
                 + F.cross_entropy(scale * v_all[rows] @ t_all.T, labels - batch * rank))
    assert loss < unshifted  # the offset labels point at the aligned pairs
    loss.backward()
    assert video.grad.abs().sum() > 0


def test_random_negatives_never_pick_the_positive_and_cover_the_batch():
    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(5, 5)
    for _ in range(200):
        neg = sample_negatives(5, g)
        assert (neg != torch.arange(5)).all()
        seen[torch.arange(5), neg] += 1
    assert (seen.diag() == 0).all() and (seen + torch.eye(5) > 0).all()


def test_hard_negatives_follow_the_similarity():
    sims = torch.full((4, 4), -5.0)
    sims.fill_diagonal_(10.0)
    sims[0, 2] = sims[1, 3] = sims[2, 0] = sims[3, 1] = 5.0
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_negatives(4, g, sims) for _ in range(50)])
    assert (picks == torch.tensor([2, 3, 0, 1])).float().mean() > 0.95
    assert sims[0, 0] == 10.0  # the caller's matrix is left alone


def test_vtm_loss_labels_positives_one_and_negatives_zero():
    pos = torch.tensor([[0.0, 8.0], [0.0, 8.0]])
    neg = torch.tensor([[8.0, 0.0], [8.0, 0.0]])
    assert vtm_loss(pos, neg).item() < 1e-3
    assert vtm_loss(neg, pos).item() > 7
    assert vtm_loss(torch.zeros(2, 2), torch.zeros(2, 2)).item() == pytest.approx(math.log(2))


def test_model_vtc_term_equals_the_free_function_on_its_features():
    config = model_config("tiny", width=64, depth=2, num_heads=2, vocab_size=2000,
                          text_dropout=0.0, mvm_weight=0, mlm_weight=0, vtm_weight=0)
    model = UnifiedMAE(config)
    batch = random_batch(config, 4, seed=2)
    with torch.no_grad():
        out = model(batch)
        vis = ~batch["video_mask"]
        tokens = model.encoder.embed_video(batch["video"])[vis].reshape(4, -1, config.width)
        video = model.encoder(tokens).mean(1)
        text = model.encoder(model.encoder.embed_text(batch["mlm_ids"]), batch["text_mask"]).mean(1)
    assert out["loss_vtc"].item() == pytest.approx(vtc_loss(video, text, torch.tensor(20.0)).item(),
                                                   rel=1e-5)


def test_vtc_candidates_replace_the_batch_features_and_take_no_gradient():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(4, 8, generator=g).requires_grad_()
    text = torch.randn(4, 8, generator=g)
    # ALBEF: momentum features of the batch (the positives first), then queued negatives
    candidates = (F.normalize(torch.randn(9, 8, generator=g), dim=-1).requires_grad_(),
                  F.normalize(torch.randn(9, 8, generator=g), dim=-1).requires_grad_())
    scale = torch.tensor(20.0)
    got = vtc_loss(video, text, scale, candidates=candidates)
    v, t = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    labels = torch.arange(4)
    want = (F.cross_entropy(scale * t @ candidates[0].T, labels)
            + F.cross_entropy(scale * v @ candidates[1].T, labels))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    assert video.grad is not None
    assert candidates[0].grad is None and candidates[1].grad is None


def _released_vtc(model: UnifiedMAE, batch: dict) -> float:
    """The VTC loss as released (in-batch candidates: the model in evaluation mode)."""
    model.eval()
    with torch.no_grad():
        loss = model(batch)["loss_vtc"].item()
    model.train()
    return loss


def test_vtc_queue_fills_first_in_first_out_in_training_only():
    config = model_config("tiny", vtc_queue=6, text_dropout=0.0)
    model = UnifiedMAE(config)
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    first, second = random_batch(config, 4, seed=0), random_batch(config, 4, seed=1)
    released = _released_vtc(model, first)
    assert int(model.vtc_queue_seen) == 0, "evaluation leaves the queue alone"
    # the momentum copy equals the encoder (no optimizer step here): the first step is the
    # released loss
    assert model(first)["loss_vtc"].item() == pytest.approx(released, rel=1e-4)
    assert int(model.vtc_queue_seen) == 4
    # the same clips again: each query's own queued copy is not one of its negatives
    vis_idx, _ = visible_and_masked_index(first["video_mask"])
    _, exclude = model._candidates(model._momentum_features(first["video"], vis_idx, first))
    assert exclude[:, 4:].tolist() == torch.eye(4, dtype=torch.bool).tolist()
    assert not exclude[:, :4].any()
    model(first)
    # other clips score the 6 queued features as extra negatives
    assert model(second)["loss_vtc"].item() > _released_vtc(model, second)
    assert torch.allclose(model.vtc_queue_video.norm(dim=-1), torch.ones(6))
    # 12 features in a ring of 6: slots 0-1 keep the repeat's last two, 2-5 the second batch
    assert int(model.vtc_queue_seen) == 12
    want = [zlib.crc32(k.encode()) for k in first["keys"][2:] + second["keys"]]
    assert model.vtc_queue_ids.tolist() == want
    state = model.state_dict()
    assert {"vtc_queue_video", "vtc_queue_text", "vtc_queue_ids", "vtc_queue_seen"} <= set(state)
    assert any(k.startswith("momentum_encoder.") for k in state)
    assert "vtc_queue_video" not in UnifiedMAE(model_config("tiny")).state_dict()


def test_the_momentum_encoder_starts_from_the_encoder_then_follows_it_slowly():
    config = model_config("tiny", vtc_queue=8, vtc_momentum=0.9, text_dropout=0.0)
    model = UnifiedMAE(config).train()
    weight = model.encoder.blocks[0].mlp.fc1.weight
    slow = model.momentum_encoder.blocks[0].mlp.fc1.weight
    with torch.no_grad():
        weight.add_(1.0)  # weights loaded after the model was built (init.video, load_path)
    model(random_batch(config, 4, seed=0))
    assert torch.equal(slow, weight), "the first training forward copies the encoder"
    before = slow.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    model(random_batch(config, 4, seed=1))
    assert torch.allclose(slow, before + 0.1, atol=1e-5)  # 10% of the way per forward


def test_excluded_candidates_are_not_scored():
    g = torch.Generator().manual_seed(2)
    video, text = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    extra = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    v, t = F.normalize(video, dim=-1), F.normalize(text, dim=-1)
    scale = torch.tensor(20.0)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[:, 3:] = True  # every queued entry is some query's own sample
    got = vtc_loss(video, text, scale, candidates=(torch.cat([v, extra]), torch.cat([t, extra])),
                   exclude=exclude)
    assert got.item() == pytest.approx(vtc_loss(video, text, scale).item(), rel=1e-6)


def test_vtc_queue_with_gather_is_refused():
    with pytest.raises(ValueError, match="vtc_queue and vtc_gather"):
        model_config("tiny", vtc_queue=8, vtc_gather=True)
