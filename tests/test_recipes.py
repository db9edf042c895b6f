"""Recipes: every shipped YAML validates; typos, bad values and bad overrides fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import recipes
from commands.cli import main as vtp_main
from recipes.config import RecipeError, load_recipe, recipe_from_dict
from recipes.optim import build_optimizer, build_scheduler, param_groups

RECIPE_DIR = Path(recipes.__file__).parent
SHIPPED = sorted(p for p in RECIPE_DIR.glob("*.yaml") if not p.name.startswith("finetune-"))
TINY = RECIPE_DIR / "tiny-synthetic.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_the_three_recipes_ship():
    names = {p.name for p in SHIPPED}
    assert {"tiny-synthetic.yaml", "simvtp-vitb-webvid10.yaml", "videomae-vitb.yaml"} <= names


@pytest.mark.parametrize("name", ["finetune-msrvtt", "finetune-tiny"])
def test_finetune_recipes_ship_and_validate(name):
    from recipes.finetune_config import load_finetune_recipe

    assert load_finetune_recipe(RECIPE_DIR / f"{name}.yaml").finetune.batch_size >= 32


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.data.tubelet == recipe.model.tubelet
    assert recipe.data.num_frames == recipe.model.num_frames
    assert recipe.data.image_size == recipe.model.image_size
    assert recipe.run_name


def test_paper_recipe_has_the_paper_numbers():
    r = load_recipe(RECIPE_DIR / "simvtp-vitb-webvid10.yaml")
    assert r.trainer.global_batch_size == 1024
    assert r.peak_lr == pytest.approx(6e-4) and r.min_lr == pytest.approx(4e-5)
    assert (r.scheduler.t_warmup, r.trainer.max_duration) == ("40ep", "200ep")
    assert r.optimizer.betas == (0.9, 0.95) and r.optimizer.weight_decay == 0.05
    assert r.trainer.precision == "amp_bf16" and r.data.device == "gpu"
    assert (r.model.width, r.model.depth, r.model.decoder_width) == (768, 12, 384)
    assert r.model.active_terms == ("mvm", "mlm", "vtc", "vtm")
    assert r.data.video_mask_ratio == 0.9 and r.data.text_mask_ratio == 0.75


def test_paper_recipe_is_the_released_data_side():
    r = load_recipe(RECIPE_DIR / "simvtp-vitb-webvid10.yaml")
    assert r.data.flip is False and r.data.crop_scales == (1.0, 0.875, 0.75, 0.66)
    assert (r.data.text_padding, r.data.text_max_length) == ("longest", 512)
    assert (r.data.mlm_mode, r.data.mlm_selection) == ("simvtp", "bernoulli")
    assert (r.data.sampler, r.data.stride, r.data.interpolation) == ("dense", 4, "linear")
    assert r.model.vtc_gather is False and r.model.vtm_negatives == "random"
    assert r.model.pool_text_padding is True and r.trainer.clip_grad_norm is None
    assert r.trainer.device_train_microbatch_size == 16
    assert (r.init.video, r.init.text) == (None, None)
    text = (RECIPE_DIR / "simvtp-vitb-webvid10.yaml").read_text()
    assert "K400_pretrain_1600_checkpoint.pth" in text and "deviation: bf16" in text


def test_videomae_recipe_is_video_only():
    r = load_recipe(RECIPE_DIR / "videomae-vitb.yaml")
    assert r.model.use_text is False and r.model.active_terms == ("mvm",)
    assert r.trainer.global_batch_size == 2048 and r.data.flip is False
    assert r.peak_lr == pytest.approx(1.5e-4 * 8)


def test_init_text_needs_a_text_side():
    with pytest.raises(RecipeError, match="init.text is set but model.use_text is false"):
        load_recipe(RECIPE_DIR / "videomae-vitb.yaml", ["init.text=/some/bert"])


@pytest.mark.parametrize("key, section", [
    ("optimizer.lrr=0.1", "optimizer"), ("trainer.max_duraton=3ba", "trainer"),
    ("model.widht=64", "model"), ("callbacks.speed=true", "callbacks"), ("sedd=3", "top level"),
])
def test_typo_override_fails_naming_the_key(key, section):
    with pytest.raises(RecipeError) as err:
        load_recipe(TINY, [key])
    bad = key.split("=")[0].split(".")[-1]
    assert f"'{bad}'" in str(err.value) and section in str(err.value)


def test_renamed_model_key_fails_naming_the_new_one(tmp_path, capsys):
    renamed = "model.text_mask_prob was renamed to model.text_mask_ratio"
    with pytest.raises(RecipeError, match=renamed):
        load_recipe(TINY, ["model.text_mask_prob=0.3"])
    text = TINY.read_text().replace("  text_mask_ratio:", "  text_mask_prob:")
    assert "text_mask_prob:" in text
    with pytest.raises(RecipeError, match=renamed):
        load_recipe(_write(tmp_path, text))
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["train", str(TINY), "model.text_mask_prob=0.3"])
    assert exit_info.value.code == 2 and renamed in capsys.readouterr().err


def test_checkpoint_written_before_the_mask_key_rename_loads(tmp_path):
    """Checkpoints keep the ModelConfig dict they were saved with, old key names included."""
    from model import UnifiedMAE, model_config
    from recipes.checkpoint import load_trained_model

    model = UnifiedMAE(model_config("tiny", text_mask_ratio=0.3))
    stored = model.config.to_dict()
    stored["text_mask_prob"] = stored.pop("text_mask_ratio")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["_extra_state"] = {"model_config": stored, "data_settings": {}}
    torch.save({"state": {"model": state}}, tmp_path / "old.pt")
    assert load_trained_model(tmp_path / "old.pt").config == model.config


def test_typo_in_yaml_file_fails_naming_the_key(tmp_path):
    text = TINY.read_text().replace("  weight_decay: 0.05", "  weight_decya: 0.05")
    with pytest.raises(RecipeError, match=r"'weight_decya' in section 'optimizer'.*'weight_decay'"):
        load_recipe(_write(tmp_path, text))


def test_overrides_apply_with_yaml_types():
    r = load_recipe(TINY, ["data.path=/some/shards", "trainer.max_duration=20ba", "seed=3",
                           "trainer.save_folder=/ckpt/{run_name}", "optimizer.lr=2e-4",
                           "optimizer.betas=[0.8, 0.9]", "trainer.load_path=null",
                           "model.vtm_weight=0"])
    assert r.data.path == "/some/shards" and r.trainer.max_duration == "20ba"
    assert r.seed == 3 and isinstance(r.seed, int) and r.data.seed == 3
    assert r.trainer.save_folder == "/ckpt/{run_name}"
    assert r.optimizer.lr == 2e-4 and isinstance(r.optimizer.lr, float)
    assert r.optimizer.betas == (0.8, 0.9) and r.trainer.load_path is None
    assert r.model.vtm_weight == 0.0 and "vtm" not in r.model.active_terms
    assert load_recipe(TINY, ["run_name=2024"]).run_name == "2024"


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=fast", "optimizer.lr: expected float, got 'fast'"),
    ("trainer.global_batch_size=8.5", "trainer.global_batch_size: expected int"),
    ("trainer.max_duration=ten", "not a Composer time"),
    ("trainer.max_duration=20", "trainer.max_duration='20' is not a Composer time"),
    ("trainer.autoresume=2", "trainer.autoresume: expected bool, got 2"),
    ("trainer.torch_threads=0", "trainer.torch_threads must be >= 1"),
    ("trainer.precision=fp64", "'fp64' is not one of"),
    ("optimizer.betas=[0.9]", "expected 2 values"),
    ("model.size=huge", "model.size: 'huge' is not one of"),
    ("model.num_heads=5", "not divisible by num_heads=5"),
    ("data.tubelet=[2,4,4]", "data.tubelet is derived from model.tubelet"),
    ("data.batch_size=3", "derived from trainer.global_batch_size"),
    ("scheduler.t_warmup=1300ba",
     "t_warmup=1300ba is not shorter than trainer.max_duration=1200ba"),
    ("run_name=null", "autoresume needs a run_name"),
    ("trainer.save_folder=null", "autoresume needs trainer.save_folder"),
    ("data.text_max_length=64", "exceeds the model's position table"),
    ("data.device=gpu trainer.device=cpu", "data.device=gpu (DALI mixed decoding) needs"),
    ("seed", "not of the form section.key=value"),
    ("trainer.autoresume.x=1", "'trainer.autoresume' is not a section"),
])
def test_bad_values_fail_with_clear_messages(override, message):
    with pytest.raises(RecipeError, match=_escape(message)):
        load_recipe(TINY, override.split(" "))


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_shipped_recipes_resolve_by_name_and_missing_ones_are_listed(tmp_path):
    assert load_recipe("tiny-synthetic").run_name == "tiny-synthetic"
    with pytest.raises(RecipeError, match="does not exist; shipped recipes: .*tiny-synthetic.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_variables_are_substituted(tmp_path):
    raw = {"variables": {"frames": 8, "root": "/data"}, "model": {"size": "tiny",
           "num_frames": "${variables.frames}"}, "data": {"path": "${variables.root}/shards"},
           "scheduler": {"t_warmup": "1ba"}, "trainer": {"max_duration": "4ba"}}
    r = recipe_from_dict(raw)
    assert r.model.num_frames == 8 and r.data.num_frames == 8 and r.data.path == "/data/shards"
    with pytest.raises(RecipeError, match="'variables' has no key 'nope'"):
        recipe_from_dict({**raw, "data": {"path": "${variables.nope}"}})


def test_flat_recipe_lists_every_resolved_key():
    flat = load_recipe(TINY, ["seed=5"]).flat()
    assert flat["seed"] == 5 and flat["data.seed"] == 5
    assert flat["model.tubelet"] == flat["data.tubelet"] == (2, 8, 8)
    assert flat["optimizer.betas"] == (0.9, 0.95) and "trainer.max_duration" in flat


def test_batch_splits_over_processes():
    r = load_recipe(TINY, ["trainer.global_batch_size=8"])
    assert r.data_for_world(2).batch_size == 4
    with pytest.raises(RecipeError, match="not divisible by the 3 processes"):
        r.data_for_world(3)


def test_lr_scaling_rule():
    r = load_recipe(TINY, ["optimizer.lr=1.5e-4", "optimizer.scale_lr=true",
                           "trainer.global_batch_size=512", "scheduler.min_lr=1e-5"])
    assert r.peak_lr == pytest.approx(3e-4) and r.min_lr == pytest.approx(2e-5)


def test_weight_decay_skips_norms_biases_embeddings_and_tokens():
    from recipes.train import build_model

    r = load_recipe(TINY)
    model = build_model(r)
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("weight") for n in decay["names"])
    assert "model.mask_token" in no_decay["names"]
    assert any("text_embed" in n for n in no_decay["names"])
    assert not any("text_embed" in n or "norm" in n for n in decay["names"])
    assert not any(n.endswith("bias") for n in decay["names"])
    assert any("patch_embed" in n for n in decay["names"]), "the Conv3d embedding decays"
    # frozen parameters (the VTC momentum encoder) are not the optimizer's
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == total


def test_optimizer_matches_torch_adamw_decay():
    """Composer's decoupled decay, converted, shrinks weights by lr*wd per step like torch's."""
    r = load_recipe(TINY, ["optimizer.lr=0.01", "optimizer.weight_decay=0.5",
                           "optimizer.name=decoupled_adamw"])
    layer = torch.nn.Linear(4, 4, bias=False)
    opt = build_optimizer(layer, r)
    before = layer.weight.detach().clone()
    layer.weight.grad = torch.zeros_like(layer.weight)
    opt.step()
    assert torch.allclose(layer.weight, before * (1 - 0.01 * 0.5))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert build_scheduler(r).alpha_f == pytest.approx(r.min_lr / r.peak_lr)


def test_fused_adamw_takes_the_same_step_as_decoupled_adamw():
    """`optimizer.name: adamw` (torch's fused AdamW) and Composer's DecoupledAdamW, given the
    same gradients from the same weights, end at the same weights: the same decay and update."""
    from recipes.train import build_model

    weights = {}
    for name in ("decoupled_adamw", "adamw"):
        r = load_recipe(TINY, ["data.path=unused", f"optimizer.name={name}",
                               "optimizer.weight_decay=0.5"])
        torch.manual_seed(0)
        model = build_model(r)
        opt = build_optimizer(model, r)
        assert isinstance(opt, torch.optim.AdamW)
        assert bool(opt.defaults.get("fused")) == (name == "adamw")
        params = [p for p in model.parameters() if p.requires_grad]
        start = torch.cat([p.detach().flatten() for p in params])
        for step in range(3):
            gen = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
            for group in opt.param_groups:  # as a schedule does: Composer scales its decay too
                group["lr"] *= 0.5
        weights[name] = torch.cat([p.detach().flatten() for p in params])
        assert (weights[name] - start).abs().max() > 1e-4, f"{name} did not move the weights"
    torch.testing.assert_close(weights["adamw"], weights["decoupled_adamw"], rtol=1e-5, atol=1e-6)


def test_resuming_another_optimizers_state_is_refused(tmp_path):
    """Composer would drop DecoupledAdamW's moments when the recipe builds AdamW (and the
    reverse) with a warning only; the run must stop before, naming the setting to use."""
    from recipes.checkpoint import check_checkpoints_to_load

    path = tmp_path / "old.pt"
    torch.save({"state": {"model": {}, "optimizers": {"DecoupledAdamW": {"state": {}}}}}, path)
    settings = ["data.path=unused", f"trainer.load_path={path}", "trainer.autoresume=false"]
    with pytest.raises(RecipeError, match=r"optimizer DecoupledAdamW.*optimizer.name=adamw "
                                          r"builds AdamW.*optimizer.name=decoupled_adamw"):
        check_checkpoints_to_load(load_recipe(TINY, [*settings, "optimizer.name=adamw"]))
    check_checkpoints_to_load(load_recipe(TINY, [*settings, "optimizer.name=decoupled_adamw"]))


def test_cli_reports_bad_key_as_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["train", str(TINY), "trainer.max_duraton=3ba"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "vtp train: error: unknown key 'max_duraton' in section 'trainer'" in err
    assert "Traceback" not in err


def test_cli_reports_missing_data_as_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["train", str(TINY), "data.path=", f"trainer.save_folder={tmp_path}"])
    assert exit_info.value.code == 2
    assert "data.path is empty" in capsys.readouterr().err
