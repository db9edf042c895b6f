"""UnifiedMAE on tiny configs: shapes, every loss term, switches, retrieval encoders, FLOPs,
overfit."""

from __future__ import annotations

import math

import pytest
import torch

from model import UnifiedMAE, flops_per_batch, flops_per_sample, model_config
from model.config import MODEL_SIZES, ModelConfig
from model.flops import forward_flops
from model.layers import sinusoid_table
from model.synthetic import random_batch
from model.video import patchify, tube_target, unpatchify, visible_and_masked_index

TERMS = ("mvm", "mlm", "vtc", "vtm")


def tiny(**overrides) -> ModelConfig:
    # Narrower than the "tiny" preset so the whole file runs in seconds on 2 shared cores.
    small = dict(width=64, depth=2, num_heads=2, decoder_width=64, decoder_depth=1,
                 decoder_heads=2, vocab_size=2000, text_dropout=0.0)
    return model_config("tiny", **{**small, **overrides})


@pytest.fixture
def single_thread():
    # Tiny matmuls on 2 busy cores run ~5x faster on one thread; restore the setting after.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_forward_shapes_and_every_term():
    config = tiny()
    torch.manual_seed(0)
    model = UnifiedMAE(config)
    batch = random_batch(config, 4, text_len=12, seed=1)
    out = model(batch)
    num_masked = int(batch["video_mask"][0].sum())
    assert num_masked == config.num_masked == 4 * round(0.9 * 16)
    assert out["mvm_pred"].shape == (4, num_masked, config.tube_dim) == (4, 56, 3 * 2 * 8 * 8)
    for term in TERMS:
        value = out[f"loss_{term}"]
        assert value.ndim == 0 and torch.isfinite(value) and value > 0, term
    total = sum(out[f"loss_{t}"] for t in TERMS)
    assert torch.allclose(out["loss"], total)
    assert math.isclose(out["logit_scale"].item(), 1 / 0.05, rel_tol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP-safe: nothing unused
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.mlm_head.weight.grad.abs().sum() > 0 and model.vtm_head.weight.grad.abs().sum() > 0
    assert model.encoder.text_embed.word_embeddings.weight.grad.abs().sum() > 0


def test_loss_weights_scale_and_switch_terms_off():
    config = tiny(mlm_weight=2.0, vtc_weight=0.0, vtm_weight=0.5)
    torch.manual_seed(0)
    model = UnifiedMAE(config)
    out = model(random_batch(config, 4, seed=2))
    assert "loss_vtc" not in out and config.active_terms == ("mvm", "mlm", "vtm")
    want = out["loss_mvm"] + 2.0 * out["loss_mlm"] + 0.5 * out["loss_vtm"]
    assert torch.allclose(out["loss"], want)
    no_heads = UnifiedMAE(tiny(mlm_weight=0.0, vtm_weight=0.0, mvm_weight=0.0))
    assert not any(hasattr(no_heads, n) for n in ("mlm_head", "vtm_head", "decoder", "mask_token"))
    out = no_heads(random_batch(no_heads.config, 4, seed=2))
    out["loss"].backward()
    assert all(p.grad is not None for p in no_heads.parameters())  # DDP-safe: nothing unused


def test_video_only_mode_runs_without_text():
    config = tiny(use_text=False)
    model = UnifiedMAE(config)
    assert not any("text_embed" in n or "head" in n and "decoder" not in n
                   for n, _ in model.named_parameters())
    batch = random_batch(config, 2, seed=0)
    batch = {"video": batch["video"], "video_mask": batch["video_mask"]}
    out = model(batch)
    assert set(out) == {"mvm_pred", "loss_mvm", "loss"}
    assert torch.equal(out["loss"], out["loss_mvm"])
    out["loss"].backward()
    with pytest.raises(RuntimeError, match="use_text=False"):
        model.encode_text(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4))


def test_text_padding_is_masked_in_attention():
    config = tiny()
    model = UnifiedMAE(config).eval()
    ids = torch.tensor([[101, 1500, 1600, 102, 0, 0]])
    keep = torch.tensor([[1, 1, 1, 1, 0, 0]])
    changed = ids.clone()
    changed[0, 4:] = 1234  # different tokens at padded positions
    out = model.encoder(model.encoder.embed_text(ids), keep)[:, :4]
    out_changed = model.encoder(model.encoder.embed_text(changed), keep)[:, :4]
    assert torch.allclose(out, out_changed, atol=1e-5)
    unmasked = model.encoder(model.encoder.embed_text(changed))[:, :4]
    assert not torch.allclose(out, unmasked, atol=1e-3)


def test_encode_functions_are_unmasked_means():
    config = tiny()
    model = UnifiedMAE(config).eval()
    batch = random_batch(config, 3, seed=4)
    video = model.encode_video(batch["video"])
    text = model.encode_text(batch["text_ids"], batch["text_mask"])
    assert video.shape == text.shape == (3, config.width)
    full = model.encoder(model.encoder.embed_video(batch["video"]))
    assert full.shape[1] == config.num_tokens
    assert torch.allclose(video, full.mean(1), atol=1e-6)


def test_vtm_negatives_come_from_the_generator_not_global_rng():
    config = tiny(mvm_weight=0, mlm_weight=0, vtc_weight=0)
    model = UnifiedMAE(config)
    batch = random_batch(config, 6, seed=5)
    first = model(batch, generator=torch.Generator().manual_seed(7))["loss_vtm"]
    torch.manual_seed(123)  # global RNG must not matter
    again = model(batch, generator=torch.Generator().manual_seed(7))["loss_vtm"]
    other = model(batch, generator=torch.Generator().manual_seed(8))["loss_vtm"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.equal(model(batch)["loss_vtm"], model(batch)["loss_vtm"])  # seeded by keys


def test_hard_negative_vtm_runs_and_needs_two_samples():
    config = tiny(vtm_negatives="hard")
    model = UnifiedMAE(config)
    out = model(random_batch(config, 4, seed=6))
    assert torch.isfinite(out["loss_vtm"])
    with pytest.raises(ValueError, match="at least 2 samples"):
        model(random_batch(config, 1, seed=6))


def test_learnable_temperature_gets_gradient():
    config = tiny(vtc_learnable_temperature=True, mvm_weight=0, mlm_weight=0, vtm_weight=0)
    model = UnifiedMAE(config)
    model(random_batch(config, 4, seed=1))["loss"].backward()
    assert model.log_logit_scale.grad is not None and model.log_logit_scale.grad != 0
    assert "log_logit_scale" in model.no_weight_decay()
    assert "log_logit_scale" not in dict(UnifiedMAE(tiny()).named_parameters())


def test_bad_batches_fail_with_clear_errors():
    config = tiny()
    model = UnifiedMAE(config)
    batch = random_batch(config, 2, seed=0)
    uneven = batch["video_mask"].clone()
    uneven[0, 0] = ~uneven[0, 0]
    with pytest.raises(ValueError, match="same number of tokens"):
        model({**batch, "video_mask": uneven})
    with pytest.raises(ValueError, match="video must be"):
        model({**batch, "video": batch["video"][:, :, :4]})
    with pytest.raises(ValueError, match="video_mask must be"):
        model({**batch, "video_mask": batch["video_mask"][:, :10]})


def test_config_presets_and_validation():
    base = model_config("base")
    assert (base.width, base.depth, base.num_heads, base.decoder_width, base.decoder_depth) == (
        768, 12, 12, 384, 4)
    assert base.grid == (8, 14, 14) and base.num_tokens == 1568 and base.tube_dim == 1536
    assert base.num_tokens - base.num_masked == 160  # SimVTP: 20 visible cells x 8 slices
    assert model_config("large").decoder_depth == 12 and model_config("small").width == 384
    assert set(MODEL_SIZES) == {"tiny", "small", "base", "large"}
    assert ModelConfig.from_dict(base.to_dict()) == base
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        model_config("tiny", widht=3)
    with pytest.raises(ValueError, match="not a multiple of tubelet"):
        model_config("tiny", num_frames=7)
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("huge")
    with pytest.raises(ValueError, match="no loss term is active"):
        model_config("tiny", use_text=False, mvm_weight=0.0)


def test_patchify_round_trip_and_target_normalisation():
    config = tiny()
    video = torch.randn(2, 3, config.num_frames, config.image_size, config.image_size)
    tubes = patchify(video, config.tubelet)
    assert tubes.shape == (2, config.num_tokens, 2 * 8 * 8, 3)
    assert torch.equal(unpatchify(tubes, config.tubelet, config.grid), video)
    # token 1 is (t=0, h=0, w=1): pixels [0:2, 0:8, 8:16]
    assert torch.equal(tubes[:, 1, 0], video[:, :, 0, 0, 8])
    target = tube_target(video, config.tubelet, config.mean, config.std)
    per_channel = target.reshape(2, config.num_tokens, -1, 3)
    assert torch.allclose(per_channel.mean(2), torch.zeros(()), atol=1e-5)
    assert torch.allclose(per_channel.std(2), torch.ones(()), atol=1e-4)
    raw = tube_target(video, config.tubelet, config.mean, config.std, normalize=False)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1, 1)
    assert torch.allclose(raw, patchify(video * std + mean, config.tubelet).flatten(2))


def test_visible_index_orders_tokens():
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    vis, hidden = visible_and_masked_index(mask)
    assert vis.tolist() == [[1, 3], [0, 1]] and hidden.tolist() == [[0, 2], [2, 3]]


def test_sinusoid_table_matches_videomae_formula():
    n, d = 7, 6
    table = sinusoid_table(n, d)
    for pos in range(n):
        for j in range(d):
            angle = pos / 10000 ** (2 * (j // 2) / d)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(table[pos, j].item() - want) < 1e-6


def test_flops_scale_with_visible_tokens_and_match_batch():
    base = model_config("base")
    parts = forward_flops(base, num_visible=160, text_len=32)
    assert set(parts) >= {"encoder_joint", "encoder_video", "encoder_text",
                          "encoder_vtm_negatives", "decoder", "mlm_head", "tubelet_embed"}
    masked = flops_per_sample(base, num_visible=160, text_len=32)
    unmasked = flops_per_sample(base, num_visible=1568, text_len=32)
    assert 300e9 < masked < 600e9  # about 460 GFLOP per ViT-B sample
    assert unmasked / masked > 4
    assert flops_per_sample(base, num_visible=200) > flops_per_sample(base, num_visible=160)
    video_only = flops_per_sample(model_config("base", use_text=False), num_visible=160)
    assert video_only < masked / 2
    config = tiny()
    batch = random_batch(config, 4, text_len=10, seed=0)
    num_visible = config.num_tokens - int(batch["video_mask"][0].sum())
    num_mlm = (batch["mlm_labels"] != -100).sum().item() / 4
    want = 4 * flops_per_sample(config, num_visible=num_visible, text_len=10, num_mlm=num_mlm)
    assert flops_per_batch(config, batch) == pytest.approx(want)


def _smooth_clips(config: ModelConfig, count: int, seed: int) -> torch.Tensor:
    """Moving oriented sinusoids, one per clip: masked tubes are predictable from visible ones."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(config.num_frames).float()[:, None, None]
    y = torch.arange(config.image_size).float()[None, :, None]
    x = torch.arange(config.image_size).float()[None, None, :]
    clips = []
    for _ in range(count):
        fx, fy, phase = (torch.rand(3, generator=g) * torch.tensor([0.4, 0.4, 6.28])).tolist()
        clips.append(torch.stack([torch.sin(fx * x + fy * y + 0.3 * (c + 1) * t + phase + c)
                                  for c in range(3)]))
    return torch.stack(clips)


def test_overfitting_eight_clips_drives_every_loss_down(single_thread):
    config = tiny()
    torch.manual_seed(0)
    model = UnifiedMAE(config)
    batch = random_batch(config, 8, text_len=12, seed=3)
    batch["video"] = _smooth_clips(config, 8, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for step in range(130):
        out = model(batch, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append({t: out[f"loss_{t}"].item() for t in TERMS})
    first = history[0]
    last = {t: sum(h[t] for h in history[-10:]) / 10 for t in TERMS}
    assert last["mvm"] < 0.6 * first["mvm"], (first, last)
    assert last["mlm"] < 0.1 * first["mlm"], (first, last)
    assert last["vtc"] < 0.1 * first["vtc"], (first, last)
    assert last["vtm"] < 0.5 * first["vtm"], (first, last)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    batch = random_batch(tiny(), 3, seed=9)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = UnifiedMAE(tiny(activation_checkpointing=flag))
        out = model(batch)
        out["loss"].backward()
        grads.append((out["loss"].detach(), model.encoder.blocks[0].mlp.fc1.weight.grad))
    assert torch.allclose(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_flops_count_full_vtc_passes_and_the_momentum_encoder_forward_only():
    from model.flops import transformer_flops

    plain = model_config("base")
    queued = model_config("base", vtc_inputs="full", vtc_queue=512)
    parts = forward_flops(queued, num_visible=160, text_len=32)
    assert parts["encoder_video"] == transformer_flops(1568, 768, 12, 4.0)  # every tube
    assert parts["momentum_video"] == parts["encoder_video"]
    extra = (flops_per_sample(queued, num_visible=160, text_len=32)
             - flops_per_sample(plain, num_visible=160, text_len=32))
    video_gain = parts["encoder_video"] - forward_flops(plain, num_visible=160)["encoder_video"]
    # trained passes count 3x, the momentum passes once
    want = 3 * video_gain + parts["momentum_video"] + parts["momentum_text"]
    assert extra == pytest.approx(want)


def test_full_vtc_inputs_read_the_whole_clip_and_caption():
    config = model_config("tiny", vtc_inputs="full", text_dropout=0.0)
    model = UnifiedMAE(config).eval()
    batch = random_batch(config, 4, seed=0)
    with torch.no_grad():
        got = model(batch)["loss_vtc"]
        video = model.encode_video(batch["video"])
        text = model.encode_text(batch["text_ids"], batch["text_mask"])
    from model import vtc_loss

    assert got.item() == pytest.approx(vtc_loss(video, text, model.logit_scale()).item(), rel=1e-5)
    masked = UnifiedMAE(model_config("tiny", text_dropout=0.0)).eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert masked(batch)["loss_vtc"].item() != pytest.approx(got.item(), rel=1e-3)
