"""The shared encoder out as safetensors + config.json, and back."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from model import UnifiedMAE, export_encoder, load_exported_encoder, model_config
from model.synthetic import random_batch


def test_export_encoder_round_trips(tmp_path):
    config = model_config("tiny", width=64, depth=2, num_heads=2, decoder_width=32,
                          decoder_depth=1, decoder_heads=2, vocab_size=2000,
                          pool_text_padding=False)
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
