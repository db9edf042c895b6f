"""Checkpoint interop: VideoMAE .pth files in, MiniLM/BERT embeddings in, safetensors out."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from model import (
    UnifiedMAE,
    export_encoder,
    load_bert_embeddings,
    load_exported_encoder,
    load_videomae_checkpoint,
    model_config,
)
from model.config import ModelConfig
from model.synthetic import random_batch


def small_video_config(**overrides) -> ModelConfig:
    return model_config("tiny", width=64, depth=2, num_heads=2, decoder_width=32,
                        decoder_depth=1, decoder_heads=2, vocab_size=2000, **overrides)


def _block_keys(prefix: str, dim: int, mlp: int) -> dict[str, tuple[int, ...]]:
    # VideoMAE modeling_finetune.Block with qkv_bias=True and no layer scale (init_values=0).
    return {
        f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
        f"{prefix}.attn.q_bias": (dim,), f"{prefix}.attn.v_bias": (dim,),
        f"{prefix}.attn.qkv.weight": (3 * dim, dim),
        f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (mlp, dim), f"{prefix}.mlp.fc1.bias": (mlp,),
        f"{prefix}.mlp.fc2.weight": (dim, mlp), f"{prefix}.mlp.fc2.bias": (dim,),
    }


def videomae_state_dict(c: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fake PretrainVisionTransformer state dict, key names as in the official release."""
    shapes = {"encoder.patch_embed.proj.weight": (c.width, 3, *c.tubelet),
              "encoder.patch_embed.proj.bias": (c.width,),
              "encoder.norm.weight": (c.width,), "encoder.norm.bias": (c.width,),
              "decoder.norm.weight": (c.decoder_width,), "decoder.norm.bias": (c.decoder_width,),
              "decoder.head.weight": (c.tube_dim, c.decoder_width),
              "decoder.head.bias": (c.tube_dim,),
              "encoder_to_decoder.weight": (c.decoder_width, c.width),
              "mask_token": (1, 1, c.decoder_width)}
    for i in range(c.depth):
        shapes.update(_block_keys(f"encoder.blocks.{i}", c.width, 4 * c.width))
    for i in range(c.decoder_depth):
        shapes.update(_block_keys(f"decoder.blocks.{i}", c.decoder_width, 4 * c.decoder_width))
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def test_videomae_checkpoint_loads_every_official_key(tmp_path):
    config = small_video_config()
    state = videomae_state_dict(config)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": state, "epoch": 799, "args": argparse.Namespace(lr=1.5e-4)}, path)
    model = UnifiedMAE(config)
    text_before = model.encoder.text_embed.word_embeddings.weight.clone()
    report = load_videomae_checkpoint(model, path, strict=True)
    assert report.clean and sorted(report.matched) == sorted(state)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert torch.equal(model.encoder.text_embed.word_embeddings.weight, text_before)  # fresh
    assert "matched" in report.summary()


def test_videomae_report_names_skips_and_strict_refuses(tmp_path):
    config = small_video_config()
    state = {f"module.{k}": v for k, v in videomae_state_dict(config).items()}
    state["module.encoder.blocks.0.gamma_1"] = torch.ones(config.width)  # layer scale: not ours
    state["module.decoder.head.weight"] = torch.zeros(1536, config.decoder_width)  # 2x16x16
    state["module.pos_embed"] = torch.zeros(1, config.num_tokens, config.decoder_width)
    del state["module.mask_token"]
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    model = UnifiedMAE(config)
    report = load_videomae_checkpoint(model, path)
    assert "unexpected" in report.skipped["encoder.blocks.0.gamma_1"]
    assert "shape mismatch" in report.skipped["decoder.head.weight"]
    assert "(1536, 32)" in report.skipped["decoder.head.weight"]
    assert "sinusoid" in report.skipped["pos_embed"]
    assert report.missing == ["mask_token"]
    assert "encoder.blocks.1.mlp.fc2.bias" in report.matched
    assert "decoder.head.weight" not in report.matched
    with pytest.raises(ValueError, match="gamma_1"):
        load_videomae_checkpoint(UnifiedMAE(config), path, strict=True)


def test_videomae_file_with_arbitrary_objects_is_refused(tmp_path):
    config = small_video_config()
    path = tmp_path / "pickled.pth"
    torch.save({"model": videomae_state_dict(config), "extra": pytest.approx(1.0)}, path)
    with pytest.raises(ValueError, match="never unpickles code"):
        load_videomae_checkpoint(UnifiedMAE(config), path)


def test_block_matches_the_videomae_attention_formula(tmp_path):
    config = small_video_config()
    model = UnifiedMAE(config).eval()
    state = videomae_state_dict(config, seed=3)
    torch.save({"model": state}, tmp_path / "c.pth")
    load_videomae_checkpoint(model, tmp_path / "c.pth", strict=True)
    p = {k.removeprefix("encoder.blocks.0."): v for k, v in state.items()
         if k.startswith("encoder.blocks.0.")}
    x0 = torch.randn(2, 5, config.width)
    # VideoMAE modeling_finetune.Attention and Block, written out.
    h = F.layer_norm(x0, (config.width,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
    bias = torch.cat([p["attn.q_bias"], torch.zeros_like(p["attn.v_bias"]), p["attn.v_bias"]])
    qkv = F.linear(h, p["attn.qkv.weight"], bias).reshape(2, 5, 3, 2, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (config.width // 2) ** -0.5, qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)).softmax(-1)
    x1 = x0 + F.linear((attn @ v).transpose(1, 2).reshape(2, 5, -1), p["attn.proj.weight"],
                       p["attn.proj.bias"])
    h = F.layer_norm(x1, (config.width,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
    want = x1 + F.linear(F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])),
                         p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    assert torch.allclose(model.encoder.blocks[0](x0), want, atol=1e-5)


def test_minilm_embeddings_load_into_a_width_384_model(bert_tokenizer_dir):
    config = model_config("tiny", width=384, num_heads=6, depth=1, decoder_depth=1,
                          max_text_len=32)
    model = UnifiedMAE(config)
    report = load_bert_embeddings(model, bert_tokenizer_dir, strict=True)
    names = ("word_embeddings.weight", "position_embeddings.weight",
             "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
    assert report.matched == sorted(f"encoder.text_embed.{n}" for n in names)
    assert "buffer" in report.ignored["embeddings.position_ids"] and not report.skipped
    assert any("first 32 of 512" in n for n in report.notes)
    source = load_file(bert_tokenizer_dir / "model.safetensors")
    emb = model.encoder.text_embed
    assert torch.equal(emb.word_embeddings.weight, source["embeddings.word_embeddings.weight"])
    assert torch.equal(emb.position_embeddings.weight,
                       source["embeddings.position_embeddings.weight"][:32])
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(bert_tokenizer_dir)(
        ["a dog runs on the beach", "aerial view of a city"], padding=True, return_tensors="pt")
    feats = model.eval().encode_text(tokens["input_ids"], tokens["attention_mask"])
    assert feats.shape == (2, 384) and torch.isfinite(feats).all()


def test_bert_width_mismatch_is_reported_not_loaded(bert_tokenizer_dir):
    model = UnifiedMAE(small_video_config())
    before = model.encoder.text_embed.word_embeddings.weight.clone()
    report = load_bert_embeddings(model, bert_tokenizer_dir)
    assert report.matched == []
    assert "shape mismatch" in report.skipped["embeddings.word_embeddings.weight"]
    assert torch.equal(model.encoder.text_embed.word_embeddings.weight, before)
    with pytest.raises(ValueError, match="word_embeddings"):
        load_bert_embeddings(model, bert_tokenizer_dir, strict=True)
    with pytest.raises(ValueError, match="use_text=False"):
        load_bert_embeddings(UnifiedMAE(small_video_config(use_text=False)), bert_tokenizer_dir)


def test_export_encoder_round_trips(tmp_path):
    config = small_video_config(pool_text_padding=False)
    torch.manual_seed(0)
    model = UnifiedMAE(config).eval()
    paths = export_encoder(model, tmp_path / "export")
    assert json.loads(paths["config"].read_text())["tubelet"] == [2, 8, 8]
    keys = set(load_file(paths["weights"]))
    assert "patch_embed.proj.weight" in keys and "text_embed.word_embeddings.weight" in keys
    assert not any(k.startswith(("decoder", "mlm_head")) for k in keys)
    loaded = load_exported_encoder(tmp_path / "export").eval()
    assert loaded.config == config
    batch = random_batch(config, 2, seed=1)
    assert torch.equal(loaded.encode_video(batch["video"]), model.encode_video(batch["video"]))
    assert torch.equal(loaded.encode_text(batch["text_ids"], batch["text_mask"]),
                       model.encode_text(batch["text_ids"], batch["text_mask"]))
