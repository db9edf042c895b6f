"""Fine-tuning as a recipe: §7's values in finetune-msrvtt.yaml, drop path, spatial test crops,
the random resized crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import UnifiedMAE, model_config
from model.dual import DualEncoder
from model.layers import Block
from pipeline.decode import center_crop, random_resized_crop
from recipes.fields import RecipeError
from recipes.finetune_config import load_finetune_recipe


def test_msrvtt_recipe_holds_the_released_protocol():
    r = load_finetune_recipe("finetune-msrvtt")
    f = r.finetune
    assert (f.max_duration, f.batch_size, f.t_warmup) == ("100ep", 64, "5ep")
    assert f.lr == pytest.approx(3e-4 * 64 / 256) and f.min_lr == pytest.approx(2.5e-7)
    assert f.betas == (0.9, 0.999) and f.weight_decay == 0.05 and f.temperature == 0.05
    assert f.drop_path == 0.1 and f.flip is True
    assert (f.crop, f.crop_area) == ("random_resized", (0.08, 1.0))
    assert f.crop_ratio == pytest.approx((3 / 4, 4 / 3), rel=1e-6)
    assert (r.test.views, r.test.crops, r.test.split_name) == (3, 3, "MSR-VTT 1k-A")
    assert f.rand_augment == (4, 7) and f.random_erasing == 0.25


def test_finetune_recipe_reaches_the_training_pipeline(tmp_path):
    from dataclasses import replace

    from evaluation.finetune import finetune_data_config
    from pipeline import DataConfig

    cfg = replace(load_finetune_recipe("finetune-msrvtt").finetune, train_data=str(tmp_path))
    evaluation = DataConfig(path="x", view=0, views=3, crops=3, crop_view=2, flip=False)
    data = finetune_data_config(evaluation, cfg, "cpu", seed=4)
    assert (data.view, data.crops, data.crop_view, data.flip) == (None, 1, 0, True)
    assert (data.crop, data.crop_area, data.rand_augment, data.random_erasing) == (
        "random_resized", (0.08, 1.0), (4, 7), 0.25)
    assert (data.batch_size, data.video_mask_ratio, data.path) == (64, 0.0, str(tmp_path))


def test_finetune_recipe_rejects_unknown_keys_and_bad_times(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'lrr'"):
        load_finetune_recipe("finetune-tiny", ["finetune.lrr=1"])
    with pytest.raises(RecipeError, match="not a Composer time"):
        load_finetune_recipe("finetune-tiny", ["finetune.max_duration=100"])
    with pytest.raises(RecipeError, match="does not exist; shipped: finetune-msrvtt"):
        load_finetune_recipe("finetune-nope")


def test_drop_path_rises_linearly_and_only_acts_in_training():
    model = UnifiedMAE(model_config("tiny", vocab_size=2000, drop_path=0.3))
    assert [b.drop_path for b in model.encoder.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    dual = DualEncoder.from_unified(UnifiedMAE(model_config("tiny", vocab_size=2000)), 0.1)
    assert dual.video_encoder.blocks[-1].drop_path == pytest.approx(0.1)
    assert dual.text_encoder.blocks[0].drop_path == 0.0
    block = Block(16, 2, drop_path=0.5)
    x = torch.randn(64, 3, 16)
    block.eval()
    assert torch.equal(block(x), block(x))
    block.train()
    torch.manual_seed(0)
    out = block(x)
    both_dropped = (out == x).flatten(1).all(1)  # a sample whose two branches were dropped
    assert both_dropped.any() and not both_dropped.all()  # 1/4 of 64 samples expected


def test_spatial_test_crops_slide_along_the_long_side():
    assert [center_crop(48, 64, 1.0, i, 3) for i in range(3)] == [
        (0, 0, 48, 48), (0, 8, 48, 48), (0, 16, 48, 48)]
    assert [center_crop(90, 30, 1.0, i, 3)[0] for i in range(3)] == [0, 30, 60]
    assert center_crop(48, 64, 1.0, 0, 1) == center_crop(48, 64)
    with pytest.raises(ValueError, match="spatial view 3"):
        center_crop(48, 64, 1.0, 3, 3)


def test_random_resized_crop_stays_inside_with_its_area_and_ratio():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(500):
        y0, x0, h, w = random_resized_crop(120, 160, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= y0 and 0 <= x0 and y0 + h <= 120 and x0 + w <= 160 and h > 0 and w > 0
        areas.append(h * w / (120 * 160))
    assert min(areas) < 0.15 and max(areas) > 0.8
    # a frame far wider than 4/3 that no sample fits falls back to the clamped centre crop
    assert random_resized_crop(10, 1000, (1.0, 1.0), (3 / 4, 4 / 3), rng) == (0, 493, 10, 13)


def test_random_erasing_fills_one_noise_rectangle_per_chosen_frame():
    from pipeline.erasing import random_erasing

    video = torch.zeros(4, 3, 8, 32, 32)
    out = random_erasing(video.clone(), 1.0, torch.Generator().manual_seed(0))
    touched = (out != 0).any(1)  # (B, T, H, W)
    areas = touched.flatten(2).float().mean(2)
    assert (areas > 0.015).all() and (areas < 0.34).all()
    again = random_erasing(video.clone(), 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(random_erasing(video.clone(), 0.0, torch.Generator()), video)
    some = random_erasing(torch.zeros(64, 3, 8, 16, 16), 0.25, torch.Generator().manual_seed(1))
    share = (some != 0).flatten(3).any(3).any(1).float().mean()
    assert 0.18 < share < 0.32
    with pytest.raises(ValueError, match="normalised float video"):
        random_erasing(torch.zeros(1, 3, 2, 8, 8, dtype=torch.uint8), 0.5, torch.Generator())
