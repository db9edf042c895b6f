"""Released weights in and out: transformers-built VideoMAE and BERT models, never downloaded.

Every reference model is built from a config object with random weights (biases and norms
too, so a dropped or swapped tensor shows), saved as its library saves it, loaded as
``init.video`` / ``init.text``, and compared output to output with the library's own forward.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from train_fixtures import train_shards  # noqa: F401  (session fixture)
from transformers import BertConfig, BertModel, VideoMAEForPreTraining, VideoMAEModel

from model import UnifiedMAE, model_config
from model.config import ModelConfig
from model.interop import (
    InitError,
    export_hf_videomae,
    hf_videomae_config,
    init_text,
    init_video,
)
from model.layers import sinusoid_table

TINY = dict(vocab_size=1000, max_text_len=32)


def tiny_config(**overrides):
    return model_config("tiny", **{**TINY, **overrides})


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            norm_scale = "norm" in name.lower() and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + float(norm_scale))


def hf_pretraining_model(config, seed: int = 0) -> VideoMAEForPreTraining:
    hf = VideoMAEForPreTraining(hf_videomae_config(config)).eval()
    _randomise(hf, seed)
    return hf


def hf_bert(width: int, seed: int = 0, positions: int = 64, vocab: int = 1000) -> BertModel:
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=2 * width,
                                max_position_embeddings=positions)).eval()
    _randomise(bert, seed)
    return bert


def clip(config, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, config.num_frames, config.image_size, config.image_size, generator=g)


def _release_block(prefix: str, dim: int, mlp: int) -> dict[str, tuple[int, ...]]:
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


def release_state_dict(c: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A PretrainVisionTransformer state dict with the release's key names, written out from
    VideoMAE's modules rather than read off ours (a renamed parameter of ours shows)."""
    shapes = {"encoder.patch_embed.proj.weight": (c.width, 3, *c.tubelet),
              "encoder.patch_embed.proj.bias": (c.width,),
              "encoder.norm.weight": (c.width,), "encoder.norm.bias": (c.width,),
              "decoder.norm.weight": (c.decoder_width,), "decoder.norm.bias": (c.decoder_width,),
              "decoder.head.weight": (c.tube_dim, c.decoder_width),
              "decoder.head.bias": (c.tube_dim,),
              "encoder_to_decoder.weight": (c.decoder_width, c.width),
              "mask_token": (1, 1, c.decoder_width)}
    for i in range(c.depth):
        shapes.update(_release_block(f"encoder.blocks.{i}", c.width, 4 * c.width))
    for i in range(c.decoder_depth):
        shapes.update(_release_block(f"decoder.blocks.{i}", c.decoder_width, 4 * c.decoder_width))
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def vtp_encoder_out(model: UnifiedMAE, video: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder(model.encoder.embed_video(video))


def hf_encoder_out(hf, video: torch.Tensor) -> torch.Tensor:
    base = hf.videomae if hasattr(hf, "videomae") else hf
    with torch.no_grad():  # transformers takes (B, T, C, H, W)
        return base(pixel_values=video.permute(0, 2, 1, 3, 4)).last_hidden_state


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    config = tiny_config()
    hf = hf_pretraining_model(config)
    out = tmp_path_factory.mktemp("hf") / "videomae"
    hf.save_pretrained(out)
    return out, hf


def test_transformers_videomae_folder_gives_the_same_encoder_output(hf_dir):
    folder, hf = hf_dir
    config = tiny_config()
    model = UnifiedMAE(config).eval()
    report = init_video(model, folder)
    assert report.loaded == {"encoder.patch_embed": 2, "encoder.blocks": 13 * config.depth,
                             "encoder.norm": 2, "decoder": 13 * config.decoder_depth + 4 + 2}
    assert not report.fresh
    video = clip(config)
    diff = (vtp_encoder_out(model, video) - hf_encoder_out(hf, video)).abs().max()
    assert diff < 1e-4, f"max abs diff {diff}"
    own = model.state_dict()
    assert torch.equal(own["mask_token"], hf.mask_token)
    assert torch.equal(own["decoder.head.weight"], hf.decoder.head.weight)
    assert torch.equal(own["decoder.blocks.1.attn.qkv.weight"][:config.decoder_width],
                       hf.decoder.decoder_layers[1].attention.attention.query.weight)


def test_release_pth_with_training_state_gives_the_same_output(hf_dir, tmp_path):
    folder, hf = hf_dir
    config = tiny_config()
    via_hf = UnifiedMAE(config)
    init_video(via_hf, folder)
    release = {k: v for k, v in via_hf.state_dict().items()
               if k.startswith(("encoder.patch_embed", "encoder.blocks", "encoder.norm",
                                "decoder", "encoder_to_decoder", "mask_token"))}
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    path = tmp_path / "checkpoint-1599.pth"
    torch.save({"model": release, "optimizer": opt.state_dict(), "epoch": 1599,
                "args": argparse.Namespace(model="pretrain_videomae_base_patch16_224")}, path)
    model = UnifiedMAE(config).eval()
    report = init_video(model, path)
    assert sum(report.loaded.values()) == len(release)
    assert report.unused == {"training state beside 'model' (optimizer)": 1,
                             "training state beside 'model' (epoch)": 1,
                             "training state beside 'model' (args)": 1}
    video = clip(config, seed=2)
    assert (vtp_encoder_out(model, video) - hf_encoder_out(hf, video)).abs().max() < 1e-4
    text = "\n".join(report.lines())
    assert "loaded 52 tensors into encoder.blocks" in text


def test_release_pth_with_the_official_key_names_loads_every_tensor(tmp_path):
    config = tiny_config()
    state = release_state_dict(config)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": state, "epoch": 799, "args": argparse.Namespace(lr=1.5e-4)}, path)
    model = UnifiedMAE(config)
    text_before = model.encoder.text_embed.word_embeddings.weight.clone()
    report = init_video(model, path)
    assert sum(report.loaded.values()) == len(state) and not report.fresh
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert torch.equal(model.encoder.text_embed.word_embeddings.weight, text_before)  # fresh


def test_release_position_table_is_set_aside_only_when_it_is_the_fixed_sinusoid(tmp_path):
    config = tiny_config()
    state = {f"module.{k}": v for k, v in release_state_dict(config).items()}  # DDP names
    state["module.pos_embed"] = sinusoid_table(config.num_tokens, config.width)[None]
    torch.save(state, tmp_path / "fixed.pth")
    report = init_video(UnifiedMAE(config), tmp_path / "fixed.pth")
    assert report.unused == {"fixed sinusoid position table (equal to ours)": 1}
    state["module.pos_embed"] = torch.zeros(1, config.num_tokens, config.width)
    torch.save(state, tmp_path / "learned.pth")
    with pytest.raises(InitError, match="pos_embed: a position table .* not the fixed sinusoid"):
        init_video(UnifiedMAE(config), tmp_path / "learned.pth")


def test_block_matches_the_videomae_attention_formula(tmp_path):
    config = tiny_config()
    model = UnifiedMAE(config).eval()
    state = release_state_dict(config, seed=3)
    torch.save({"model": state}, tmp_path / "c.pth")
    init_video(model, tmp_path / "c.pth")
    p = {k.removeprefix("encoder.blocks.0."): v for k, v in state.items()
         if k.startswith("encoder.blocks.0.")}
    heads, width = config.num_heads, config.width
    x0 = torch.randn(2, 5, width)
    # VideoMAE modeling_finetune.Attention and Block, written out.
    h = F.layer_norm(x0, (width,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
    bias = torch.cat([p["attn.q_bias"], torch.zeros_like(p["attn.v_bias"]), p["attn.v_bias"]])
    qkv = F.linear(h, p["attn.qkv.weight"], bias).reshape(2, 5, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = ((q * (width // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    x1 = x0 + F.linear((attn @ v).transpose(1, 2).reshape(2, 5, -1), p["attn.proj.weight"],
                       p["attn.proj.bias"])
    h = F.layer_norm(x1, (width,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
    want = x1 + F.linear(F.gelu(F.linear(h, p["mlp.fc1.weight"], p["mlp.fc1.bias"])),
                         p["mlp.fc2.weight"], p["mlp.fc2.bias"])
    assert torch.allclose(model.encoder.blocks[0](x0), want, atol=1e-5)


def test_video_only_transformers_model_leaves_the_decoder_fresh(tmp_path):
    config = tiny_config()
    hf = VideoMAEModel(hf_videomae_config(config)).eval()
    _randomise(hf, 3)
    hf.save_pretrained(tmp_path / "m")
    model = UnifiedMAE(config).eval()
    report = init_video(model, tmp_path / "m")
    assert report.fresh["decoder"] == 13 * config.decoder_depth + 4 + 2
    video = clip(config)
    assert (vtp_encoder_out(model, video) - hf_encoder_out(hf, video)).abs().max() < 1e-4


def test_other_width_lists_every_mismatch_with_both_shapes(tmp_path):
    other = tiny_config(width=64, num_heads=4)
    hf_pretraining_model(other).save_pretrained(tmp_path / "narrow")
    model = UnifiedMAE(tiny_config())
    before = model.encoder.patch_embed.proj.weight.clone()
    with pytest.raises(InitError) as err:
        init_video(model, tmp_path / "narrow")
    message = str(err.value)
    assert "config.json hidden_size=64 but the model has 128" in message
    assert "encoder.patch_embed.proj.weight: file (64, 3, 2, 8, 8) vs model (128, 3, 2, 8, 8)" \
        in message
    assert "encoder.blocks.3.mlp.fc2.weight: file (64, 256) vs model (128, 512)" in message
    assert torch.equal(model.encoder.patch_embed.proj.weight, before)  # nothing half-loaded


def test_other_head_count_is_refused_though_shapes_fit(hf_dir, tmp_path):
    folder, _ = hf_dir
    with pytest.raises(InitError, match="num_attention_heads=4 but the model has 8"):
        init_video(UnifiedMAE(tiny_config(num_heads=8)), folder)


def test_unknown_and_missing_release_keys_are_errors(tmp_path):
    config = tiny_config()
    state = {k: v for k, v in UnifiedMAE(config).state_dict().items()
             if k.startswith(("encoder.blocks", "encoder.norm"))}
    state["encoder.blocks.0.gamma_1"] = torch.ones(config.width)  # layer scale: not ours
    torch.save({"module": state}, tmp_path / "odd.pth")
    with pytest.raises(InitError) as err:
        init_video(UnifiedMAE(config), tmp_path / "odd.pth")
    assert "encoder.blocks.0.gamma_1: no such tensor" in str(err.value)
    assert "encoder.patch_embed.proj.weight: the file has no such tensor" in str(err.value)


def test_random_bytes_and_missing_paths_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(InitError, match="not a weights file that can be read safely"):
        init_video(UnifiedMAE(tiny_config()), junk)
    with pytest.raises(InitError, match="does not exist"):
        init_video(UnifiedMAE(tiny_config()), tmp_path / "nowhere.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": _Payload(marker)}}, f)
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, tmp_path / "e2.pth")
    for p in (path, tmp_path / "e2.pth"):
        with pytest.raises(InitError, match="never unpickles code"):
            init_video(UnifiedMAE(tiny_config()), p)
    assert not marker.exists()


def test_bert_embeddings_equal_transformers(tmp_path):
    config = tiny_config()
    bert = hf_bert(config.width, seed=4)
    bert.save_pretrained(tmp_path / "bert")
    model = UnifiedMAE(config).eval()
    report = init_text(model, tmp_path / "bert")
    assert report.loaded == {"encoder.text_embed": 5}
    assert report.unused["BERT layers/pooler/heads: SimVTP uses BERT's embeddings only"] > 0
    assert any("first 32 of 64 positions" in n for n in report.notes)
    ids = torch.randint(0, 1000, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.encoder.embed_text(ids)
        theirs = bert.embeddings(input_ids=ids)
    assert (ours - theirs).abs().max() < 1e-5


def test_released_minilm_embeddings_load_into_a_width_384_model(bert_tokenizer_dir):
    """A real released file (sentence-transformers' all-MiniLM-L6-v2, no ``bert.`` prefix)."""
    config = model_config("tiny", width=384, num_heads=6, depth=1, decoder_depth=1,
                          max_text_len=32)
    model = UnifiedMAE(config)
    report = init_text(model, bert_tokenizer_dir)
    assert report.loaded == {"encoder.text_embed": 5}
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


def test_bert_of_another_width_or_vocab_is_refused(tmp_path):
    hf_bert(64).save_pretrained(tmp_path / "narrow")
    with pytest.raises(InitError, match=r"word_embeddings.weight: file \(1000, 64\) vs model "
                                        r"\(1000, 128\)"):
        init_text(UnifiedMAE(tiny_config()), tmp_path / "narrow")
    with pytest.raises(InitError, match="no text side"):
        init_text(UnifiedMAE(tiny_config(use_text=False, mlm_weight=0, vtc_weight=0,
                                         vtm_weight=0)), tmp_path / "narrow")


def test_a_video_folder_is_not_a_bert(hf_dir):
    folder, _ = hf_dir
    with pytest.raises(InitError, match="word_embeddings.weight: the file has no"):
        init_text(UnifiedMAE(tiny_config()), folder)


def test_export_loads_in_transformers_with_no_missing_keys(hf_dir, tmp_path):
    folder, hf = hf_dir
    config = tiny_config()
    model = UnifiedMAE(config).eval()
    init_video(model, folder)
    export_hf_videomae(model, tmp_path / "export")
    loaded, info = VideoMAEModel.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert all(not v for v in info.values()), info
    video = clip(config, seed=5)
    assert (hf_encoder_out(loaded.eval(), video) - vtp_encoder_out(model, video)).abs().max() < 1e-4
    back = UnifiedMAE(config)
    init_video(back, tmp_path / "export")
    own, again = model.state_dict(), back.state_dict()
    assert all(torch.equal(own[k], again[k]) for k in own if k.startswith("encoder.blocks"))


TINY_OVERRIDES = ["model.size=tiny", "model.image_size=32", "model.num_frames=8",
                  "model.tubelet=[2,8,8]", "model.vocab_size=1000", "model.max_text_len=32",
                  "data.text_max_length=32"]


def test_simvtp_recipe_starts_from_init_video_and_text(hf_dir, tmp_path, capsys):
    from recipes.config import load_recipe
    from recipes.train import build_model

    folder, hf = hf_dir
    hf_bert(128, seed=6).save_pretrained(tmp_path / "bert")
    recipe = load_recipe("simvtp-vitb-webvid10", [*TINY_OVERRIDES, f"init.video={folder}",
                                                  f"init.text={tmp_path / 'bert'}"])
    net = build_model(recipe).model.eval()
    video = clip(recipe.model, seed=7)
    assert (vtp_encoder_out(net, video) - hf_encoder_out(hf, video)).abs().max() < 1e-4
    bert = BertModel.from_pretrained(tmp_path / "bert")
    assert torch.equal(net.encoder.text_embed.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)
    printed = capsys.readouterr().out
    assert f"init.video from {folder}:" in printed and "loaded 5 tensors into" in printed
    assert recipe.flat()["init.video"] == str(folder)


def test_train_cli_refuses_a_wrong_checkpoint_before_training(tmp_path, capsys,
                                                              train_shards):  # noqa: F811
    from commands.cli import main

    hf_pretraining_model(tiny_config(width=64, num_heads=4)).save_pretrained(tmp_path / "narrow")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "tiny-synthetic", f"init.video={tmp_path / 'narrow'}",
              "model.vocab_size=1000", f"data.path={train_shards}",
              f"trainer.save_folder={tmp_path / 'ckpt'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "init.video:" in err and "file (64, 3, 2, 8, 8) vs model (128, 3, 2, 8, 8)" in err
    assert "Traceback" not in err and not (tmp_path / "ckpt").exists()


def fake_training_checkpoint(model: UnifiedMAE, path):
    """What `vtp train` saves, as far as recipes.checkpoint.load_trained_model reads it."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["_extra_state"] = {"model_config": model.config.to_dict(), "data_settings": {}}
    torch.save({"state": {"model": state}}, path)
    return path


def test_export_cli_round_trip_and_refusals(hf_dir, tmp_path, capsys):
    from commands.cli import main

    folder, hf = hf_dir
    model = UnifiedMAE(tiny_config()).eval()
    init_video(model, folder)
    ckpt = fake_training_checkpoint(model, tmp_path / "latest-rank0.pt")
    out = tmp_path / "hf-export"
    assert main(["export", str(ckpt), "--format", "hf-videomae", "--out", str(out)]) == 0
    assert "transformers VideoMAEModel: 4 blocks, width 128" in capsys.readouterr().out
    loaded, info = VideoMAEModel.from_pretrained(out, output_loading_info=True)
    assert all(not v for v in info.values()), info
    video = clip(model.config, seed=8)
    assert (hf_encoder_out(loaded.eval(), video) - hf_encoder_out(hf, video)).abs().max() < 1e-4
    for argv, message in (([str(ckpt), "--out", str(out)], "already holds config.json"),
                          ([str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")],
                           "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", *argv, "--format", "hf-videomae"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_vtp_train_of_the_simvtp_recipe_starts_from_the_given_weights(hf_dir, tmp_path,
                                                                      train_shards):  # noqa: F811
    """`vtp train recipes/simvtp-vitb-webvid10.yaml init.video=DIR init.text=DIR` at the tiny
    size: the first step runs at lr 0 (warm-up from 0), so its checkpoint holds the init."""
    import os
    import subprocess
    import sys

    from recipes.checkpoint import load_trained_model

    folder, hf = hf_dir
    bert = hf_bert(128, seed=9, vocab=30522)  # the shipped tokenizer's vocabulary
    bert.save_pretrained(tmp_path / "bert")
    log = tmp_path / "log.txt"
    overrides = [*[o for o in TINY_OVERRIDES if "vocab" not in o], f"init.video={folder}",
                 f"init.text={tmp_path / 'bert'}", f"data.path={train_shards}",
                 "data.device=cpu", "data.num_threads=1", "trainer.device=cpu",
                 "trainer.precision=fp32", "trainer.global_batch_size=4",
                 "trainer.device_train_microbatch_size=4", "trainer.max_duration=1ba",
                 "trainer.save_interval=1ba", f"trainer.save_folder={tmp_path / 'ckpt'}",
                 "loggers.progress_bar=false", f"loggers.file={log}", "loggers.tensorboard=null"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "commands.cli", "train",
                           "recipes/simvtp-vitb-webvid10.yaml", *overrides],
                          cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "loaded 52 tensors into encoder.blocks" in done.stdout
    assert "loaded 5 tensors into encoder.text_embed" in done.stdout
    logged = log.read_text()
    assert "init.video.report" in logged and "loaded 5 tensors into encoder.text_embed" in logged
    net = load_trained_model(tmp_path / "ckpt" / "latest-rank0.pt")
    video = clip(net.config, seed=10)
    assert (vtp_encoder_out(net, video) - hf_encoder_out(hf, video)).abs().max() < 1e-4
    assert torch.equal(net.encoder.text_embed.token_type_embeddings.weight,
                       bert.embeddings.token_type_embeddings.weight)
