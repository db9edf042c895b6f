"""Pipeline parts that need no video: frame samplers, video masks, text masks, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import DataConfig, short_side_for
from pipeline.decode import multiscale_crop
from pipeline.masks import video_mask
from pipeline.samplers import frame_indices, sample_rng
from pipeline.text import TextEncoder


def _draw(kind: str, num_frames: int, seed: int = 0, key: str = "k", epoch: int = 0):
    return frame_indices(kind, num_frames, 16, 4, 4, sample_rng(seed, epoch, key))


@pytest.mark.parametrize("kind", ["dense", "segments", "sparse"])
def test_samplers_are_deterministic_in_range_and_sorted(kind):
    for num_frames in (1, 7, 16, 61, 64, 128, 500):
        first, again = _draw(kind, num_frames), _draw(kind, num_frames)
        assert np.array_equal(first, again)
        assert first.dtype == np.int32 and len(first) == 16
        assert first.min() >= 0 and first.max() <= num_frames - 1
        assert np.all(np.diff(first) >= 0)
    views = {tuple(_draw(kind, 500, epoch=e)) for e in range(8)}
    assert len(views) > 1, "a new epoch must give a new view"
    assert not np.array_equal(_draw(kind, 500, seed=0), _draw(kind, 500, seed=1))


def test_dense_sampler_stride_offsets_cover_the_clip_and_short_clips_repeat():
    starts = set()
    for i in range(400):
        idx = _draw("dense", 128, key=str(i))
        assert np.all(np.diff(idx) == 4)
        starts.add(int(idx[0]))
    assert starts == set(range(128 - 61 + 1)), "every legal offset is reachable"
    short = _draw("dense", 40)
    assert list(short[:10]) == list(range(0, 40, 4)) and set(short[10:]) == {39}


def test_segment_sampler_takes_one_frame_per_segment_and_covers_all_frames():
    seen = set()
    for i in range(200):
        idx = _draw("segments", 64, key=str(i))
        assert np.array_equal(idx // 4, np.arange(16))  # 64 frames: segments of 4
        seen.update(idx.tolist())
    assert seen == set(range(64))


def test_sparse_sampler_gives_runs_of_consecutive_frames_in_separate_segments():
    for i in range(50):
        runs = _draw("sparse", 200, key=str(i)).reshape(4, 4)
        assert np.all(np.diff(runs, axis=1) == 1)
        assert np.all(runs[:, 0] // 50 == np.arange(4))


def test_short_side_is_eight_sevenths_of_the_input_and_even():
    assert short_side_for(224) == 256  # VideoMAE's resize before its 224 px crops
    assert short_side_for(32) == 36
    assert all(short_side_for(size) % 2 == 0 for size in range(8, 400))


def test_multiscale_crop_uses_the_scales_and_stays_inside():
    rng = np.random.default_rng(0)
    sides = {int(240 * s) for s in (1.0, 0.875, 0.75, 0.66)}
    for _ in range(300):
        y0, x0, h, w = multiscale_crop(240, 320, (1.0, 0.875, 0.75, 0.66), rng)
        assert h in sides and w in sides
        assert 0 <= y0 and y0 + h <= 240 and 0 <= x0 and x0 + w <= 320


@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_tube_mask_exact_count_and_same_cells_on_every_time_slice(ratio):
    grid = (8, 14, 14)
    mask = video_mask("tube", 6, grid, ratio, torch.Generator().manual_seed(0))
    assert mask.shape == (6, 8 * 14 * 14) and mask.dtype == torch.bool
    cells = mask.view(6, 8, 196)
    assert torch.equal(cells, cells[:, :1].expand_as(cells))
    assert (cells[:, 0].sum(1) == round(ratio * 196)).all()
    assert len({tuple(row.tolist()) for row in cells[:, 0]}) == 6, "samples differ"


def test_random_and_frame_masks_exact_counts_and_determinism():
    grid = (8, 7, 7)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    rand = video_mask("random", 4, grid, 0.75, gen())
    assert (rand.sum(1) == round(0.75 * 392)).all()
    assert torch.equal(rand, video_mask("random", 4, grid, 0.75, gen()))
    frame = video_mask("frame", 4, grid, 0.5, gen()).view(4, 8, 49)
    slices = frame.all(dim=2)
    assert (slices.sum(1) == 4).all() and torch.equal(frame.any(dim=2), slices)
    with pytest.raises(ValueError, match="unknown mask kind"):
        video_mask("blocks", 4, grid, 0.5, gen())


@pytest.fixture(scope="module")
def captions():
    return ["A large yellow diamond drifts slowly up", "two red circles", "",
            "a very long caption " * 20]


@pytest.mark.parametrize("mode", ["simvtp", "bert"])
def test_text_masks_never_touch_specials_and_label_only_selected(bert_tokenizer_dir, captions,
                                                                  mode):
    encoder = TextEncoder(str(bert_tokenizer_dir), 24, 0.75, mode)
    out = encoder(captions, torch.Generator().manual_seed(0))
    tok = encoder.tokenizer
    ids, labels, mlm = out["text_ids"], out["mlm_labels"], out["mlm_ids"]
    assert ids.shape == (4, 24) and ids.dtype == torch.int64
    assert (ids[:, 0] == tok.cls_token_id).all()
    assert torch.equal(out["text_mask"], (ids != tok.pad_token_id).long())
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    selected = labels != -100
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(mlm[~selected], ids[~selected])
    words = (~special).sum(1)
    expected = torch.clamp(torch.round(words * 0.75), min=1).minimum(words)
    assert torch.equal(selected.sum(1), expected)
    assert selected[2].sum() == 0, "an empty caption has nothing to mask"
    if mode == "simvtp":
        assert (mlm[selected] == tok.mask_token_id).all()


def test_bert_mode_replaces_about_80_10_10(bert_tokenizer_dir):
    encoder = TextEncoder(str(bert_tokenizer_dir), 64, 0.75, "bert")
    out = encoder(["a caption with a good number of distinct words in it " * 4] * 64,
                  torch.Generator().manual_seed(1))
    selected = out["mlm_labels"] != -100
    chosen, original = out["mlm_ids"][selected], out["text_ids"][selected]
    as_mask = (chosen == encoder.tokenizer.mask_token_id).float().mean()
    kept = (chosen == original).float().mean()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03


def test_config_derives_mask_grid_and_rejects_bad_values():
    assert DataConfig(num_frames=16, image_size=224, tubelet=(2, 16, 16)).mask_grid == (8, 14, 14)
    with pytest.raises(ValueError, match="sampler"):
        DataConfig(sampler="everything")
    with pytest.raises(ValueError, match="image_size"):
        DataConfig(image_size=100)
    with pytest.raises(ValueError, match="interpolation"):
        DataConfig(interpolation="bicubic")


def test_longest_padding_is_as_wide_as_the_longest_caption_and_cuts_at_the_limit(
        bert_tokenizer_dir):
    short = ["two red circles", "a dog"]
    encoder = TextEncoder(str(bert_tokenizer_dir), 512, 0.75, "simvtp", padding="longest")
    out = encoder(short, torch.Generator().manual_seed(0))
    longest = max(len(encoder.tokenizer(c)["input_ids"]) for c in short)
    assert out["text_ids"].shape == (2, longest) and out["text_mask"][0].all()
    long = encoder(["word " * 600], torch.Generator().manual_seed(0))
    assert long["text_ids"].shape == (1, 512)
    fixed = TextEncoder(str(bert_tokenizer_dir), 24, 0.75, "simvtp")
    assert fixed(short, torch.Generator().manual_seed(0))["text_ids"].shape == (2, 24)


def test_bernoulli_selection_is_independent_per_word_piece(bert_tokenizer_dir):
    captions = ["a caption with a good number of distinct words in it"] * 400
    encoder = TextEncoder(str(bert_tokenizer_dir), 32, 0.75, "simvtp", padding="longest",
                          selection="bernoulli")
    out = encoder(captions, torch.Generator().manual_seed(2))
    ids, selected = out["text_ids"], out["mlm_labels"] != -100
    special = torch.isin(ids, torch.tensor(encoder.tokenizer.all_special_ids))
    assert not (selected & special).any()
    rate = selected.sum() / (~special).sum()
    assert abs(rate - 0.75) < 0.02  # 4400 word pieces: 3 standard deviations ~ 0.02
    counts = selected.sum(1)
    assert counts.min() < counts.max(), "exact selection would give every caption the same count"
    assert (out["mlm_ids"][selected] == encoder.tokenizer.mask_token_id).all()
    none = TextEncoder(str(bert_tokenizer_dir), 32, 0.0, "simvtp", selection="bernoulli")
    assert (none(captions[:4], torch.Generator())["mlm_labels"] == -100).all()
