"""`vtp eval`: evaluation frame choice and crop, the test json, retrieval metrics by hand, the
dual encoder, and the CLI end to end on a tiny checkpoint (zero-shot, shards, multi-view,
fine-tuned, bad usage).

The CLI runs in-process through ``commands.cli.main``; the checkpoint comes from a real
`vtp train` subprocess (``tiny_checkpoint`` in train_fixtures.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import tiny_checkpoint, train_shards  # noqa: F401  (session fixtures)

from commands.cli import main as vtp_main
from evaluation import evaluate
from evaluation.retrieval import galleries, ranks, retrieval_metrics, text_video_metrics
from model import UnifiedMAE, model_config
from model.dual import DualEncoder
from pipeline.decode import center_crop
from pipeline.samplers import eval_indices

TEST_CLIPS = 6
METRIC_KEYS = {f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr")}


# -- evaluation frames and crop ---------------------------------------------------------------
def test_single_dense_view_is_centred():
    frames = eval_indices("dense", 100, 8, 2, 4, view=0, views=1)
    assert frames.dtype == np.int32 and len(frames) == 8
    assert np.all(np.diff(frames) == 2)
    before, after = int(frames[0]), 99 - int(frames[-1])
    assert abs(before - after) <= 1, frames


def test_dense_views_are_evenly_spaced_and_deterministic():
    starts = [int(eval_indices("dense", 100, 8, 2, 4, view=v, views=4)[0]) for v in range(4)]
    assert starts == sorted(set(starts)), starts
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1, starts
    assert starts[0] > 0 and starts[-1] + 14 < 99  # each view sits inside its share of the room
    again = [int(eval_indices("dense", 100, 8, 2, 4, view=v, views=4)[0]) for v in range(4)]
    assert again == starts


def test_segment_views_take_one_frame_per_segment():
    length, count = 8, 80
    edges = np.linspace(0, count, length + 1)
    for views in (1, 3):
        picks = [eval_indices("segments", count, length, 4, 4, view=v, views=views)
                 for v in range(views)]
        for frames in picks:
            assert np.all((frames >= edges[:-1]) & (frames < edges[1:])), frames
        if views == 1:  # the middle of each 10-frame segment
            assert picks[0].tolist() == [int(e + 4.5) for e in edges[:-1]]
        else:
            assert all(np.all(a < b) for a, b in zip(picks, picks[1:], strict=False))


def test_sparse_views_are_runs_inside_their_segments():
    length, clips, count = 8, 4, 64
    edges = np.linspace(0, count, clips + 1)
    for view in range(2):
        frames = eval_indices("sparse", count, length, 4, clips, view=view, views=2)
        runs = frames.reshape(clips, length // clips)
        assert np.all(np.diff(runs, axis=1) == 1)
        assert np.all((runs[:, 0] >= edges[:-1]) & (runs[:, -1] < edges[1:])), frames


def test_short_clips_repeat_their_last_frame():
    for kind in ("dense", "segments", "sparse"):
        frames = eval_indices(kind, 5, 8, 2, 4, view=1, views=2)
        assert len(frames) == 8 and frames.min() >= 0 and frames.max() <= 4, (kind, frames)
        assert np.all(np.diff(frames) >= 0)
    dense = eval_indices("dense", 5, 8, 2, 4, view=0, views=1)
    assert dense.tolist() == [0, 2, 4, 4, 4, 4, 4, 4]
    assert eval_indices("segments", 1, 8, 2, 4, view=0, views=1).tolist() == [0] * 8


def test_eval_indices_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one frame"):
        eval_indices("dense", 0, 8, 2, 4, 0, 1)
    with pytest.raises(ValueError, match="view must be"):
        eval_indices("dense", 50, 8, 2, 4, 2, 2)
    with pytest.raises(ValueError, match="unknown sampler"):
        eval_indices("random", 50, 8, 2, 4, 0, 1)
    with pytest.raises(ValueError, match="multiple of sparse_clips"):
        eval_indices("sparse", 50, 8, 2, 3, 0, 1)


def test_center_crop_is_a_centred_square():
    assert center_crop(48, 64) == (0, 8, 48, 48)
    assert center_crop(64, 48) == (8, 0, 48, 48)
    assert center_crop(100, 200, 0.5) == (25, 75, 50, 50)
    y0, x0, h, w = center_crop(37, 90, 0.875)
    assert h == w == int(37 * 0.875) and y0 == (37 - h) // 2 and x0 == (90 - w) // 2


# -- the test json ----------------------------------------------------------------------------
def _write(path: Path, entries) -> Path:
    path.write_text(json.dumps(entries))
    return path


def test_test_items_keep_order_and_mark_missing_files(tmp_path):
    (tmp_path / "videos").mkdir()
    for name in ("a", "c"):
        (tmp_path / "videos" / f"{name}.mp4").write_bytes(b"x")
    entries = [{"video": "videos/a.mp4", "caption": "first"},
               {"video": "videos/b.mp4", "caption": "gone"},
               {"video": "videos/c.mp4", "sentence": "third, MSR-VTT's key"}]
    items = evaluate.test_items(_write(tmp_path / "test.json", entries))  # root: the json's folder
    assert [i.key for i in items] == ["a", "b", "c"]
    assert [i.caption for i in items] == ["first", "gone", "third, MSR-VTT's key"]
    assert items[0].error is None and items[0].path == str(tmp_path / "videos" / "a.mp4")
    assert items[1].error and "missing file" in items[1].error and "b.mp4" in items[1].error
    assert items[2].error is None
    by_id = [{"video_id": "c", "caption": "by id"}, {"video_id": "d", "caption": "no file"}]
    items = evaluate.test_items(_write(tmp_path / "ids.json", by_id), tmp_path / "videos")
    assert items[0].key == "c" and items[0].error is None
    assert items[1].key == "d" and "missing file" in items[1].error


def test_test_items_stay_inside_the_video_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "videos").mkdir(parents=True)
    outside.mkdir()
    (outside / "s.mp4").write_bytes(b"x")
    (root / "videos" / "ok.mp4").write_bytes(b"x")
    (root / "videos" / "link.mp4").symlink_to(outside / "s.mp4")
    entries = [{"video": "videos/ok.mp4", "caption": "inside"},
               {"video": "../secret/s.mp4", "caption": "climbs out", "video_id": "a"},
               {"video": str(outside / "s.mp4"), "caption": "absolute", "video_id": "b"},
               {"video": "videos/link.mp4", "caption": "links out", "video_id": "c"},
               {"video": "videos/../../secret/s.mp4", "caption": "climbs out in the middle",
                "video_id": "d"}]
    items = evaluate.test_items(_write(root / "test.json", entries))
    assert items[0].error is None
    for item in items[1:]:
        assert item.error and item.error.startswith("unsafe"), item
        assert item.path == ""
    # the same json read with --video-root above the secret folder: the relative ones are fine
    items = evaluate.test_items(_write(root / "test.json", entries[:2]), tmp_path / "root")
    assert items[0].error is None and items[1].error.startswith("unsafe")


def test_test_items_reject_duplicates_and_bad_json(tmp_path):
    twice = [{"video": "x/a.mp4", "caption": "one"}, {"video": "y/a.mp4", "caption": "two"}]
    with pytest.raises(ValueError, match="appears twice"):
        evaluate.test_items(_write(tmp_path / "dup.json", twice))
    with pytest.raises(ValueError, match="json list"):
        evaluate.test_items(_write(tmp_path / "obj.json", {"video": "a.mp4"}))
    with pytest.raises(ValueError, match="needs a caption"):
        evaluate.test_items(_write(tmp_path / "nocap.json", [{"video": "a.mp4"}]))


# -- metrics by hand (complements tests/test_retrieval.py) ------------------------------------
def test_video_to_text_direction_with_ties_by_hand():
    # rows: captions, columns: videos; v2t reads the columns
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    video = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    sims = text @ video.T  # [[1, .6, 0], [1, .6, 0], [0, .8, 1]]
    # t2v: caption 0 -> 1; caption 1 prefers video 0 (1 > .6) -> 2; caption 2 -> 1
    # v2t: video 0 ties captions 0 and 1 (both 1) -> 2; video 1 scores captions .6, .6, .8:
    #      its caption 1 ties caption 0 and is below caption 2 -> 3; video 2 -> 1
    assert ranks(sims).tolist() == [1, 2, 1]
    assert ranks(sims.T).tolist() == [2, 3, 1]
    m = text_video_metrics(text, video)
    assert m["t2v_r1"] == pytest.approx(200 / 3) and m["v2t_r1"] == pytest.approx(100 / 3)
    assert m["v2t_medr"] == 2.0 and m["v2t_meanr"] == pytest.approx(2.0)
    assert m["t2v_medr"] == 1.0 and m["t2v_meanr"] == pytest.approx(4 / 3)
    assert m["v2t_r5"] == 100.0 and m["n"] == 3


def test_galleries_cut_a_hash_order_into_near_equal_disjoint_parts():
    keys = [f"clip{i:04d}" for i in range(1990)]
    parts = galleries(keys, 200)
    assert len(parts) == 10 and {len(p) for p in parts} == {199}
    assert sorted(i for p in parts for i in p) == list(range(1990))
    # the same clips in another order land in the same galleries (hash order, not input order)
    flipped = galleries(keys[::-1], 200)
    as_keys = lambda ps, ks: sorted(sorted(ks[i] for i in p) for p in ps)  # noqa: E731
    assert as_keys(parts, keys) == as_keys(flipped, keys[::-1])
    # consecutive keys (generation order) are spread over the galleries, not kept together
    assert len({next(g for g, p in enumerate(parts) if i in p) for i in range(10)}) > 3
    one = galleries(keys[:7], None)
    assert len(one) == 1 and sorted(one[0]) == list(range(7))


def test_a_query_is_ranked_within_its_own_gallery_only():
    # captions 0 and 3 match a clip of the other gallery (2 and 1) better than their own:
    # misses among all four clips, hits when each is ranked within its own pair
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.0, 1.0]])
    video = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0], [0.1, 1.0]])
    whole = text_video_metrics(text, video)
    split = text_video_metrics(text, video, [[0, 1], [2, 3]])
    assert whole["t2v_r1"] == 50.0 and split["t2v_r1"] == 100.0
    assert split["n"] == 4 and split["galleries"] == 2 and split["gallery_size"] == 2
    assert split["chance_r1"] == pytest.approx(50.0) and whole["chance_r1"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="exactly once"):
        text_video_metrics(text, video, [[0, 1], [1, 2, 3]])


def test_gallery_size_below_two_is_refused():
    with pytest.raises(ValueError, match="gallery_size must be >= 2"):
        evaluate.EvalConfig(data="x", out="y", gallery_size=1)


def test_median_and_mean_rank_by_hand():
    true_ranks = [1, 4, 2, 5, 3]  # odd count: the median is the middle rank, 3
    sims = torch.full((5, 5), 0.1)
    for i, rank in enumerate(true_ranks):
        sims[i, i] = 0.5
        above = [j for j in range(5) if j != i][:rank - 1]
        sims[i, above] = 0.9
    assert ranks(sims).tolist() == true_ranks
    m = retrieval_metrics(sims, "t2v")
    assert m["t2v_medr"] == 3.0 and m["t2v_meanr"] == pytest.approx(3.0)
    assert m["t2v_r1"] == pytest.approx(20.0) and m["t2v_r5"] == 100.0
    sims[3, 4] = 0.5  # a tie with the true match counts against it: rank 5 stays 5
    sims[0, 1] = 0.5  # rank 1 becomes 2
    assert ranks(sims).tolist() == [2, 4, 2, 5, 3]
    assert retrieval_metrics(sims, "t2v")["t2v_meanr"] == pytest.approx(16 / 5)


# -- the dual encoder ------------------------------------------------------------------------
def test_dual_encoder_copies_the_pretrained_encoder():
    config = model_config("tiny", text_dropout=0.0)
    torch.manual_seed(0)
    pretrained = UnifiedMAE(config).eval()
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    dual = DualEncoder.from_unified(pretrained)
    assert dual.video_encoder.text_embed is None and dual.text_encoder.patch_embed is None
    for name, value in dual.video_encoder.blocks.state_dict().items():
        assert torch.equal(value, before[f"encoder.blocks.{name}"])
    video = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[101, 2000, 2001, 102, 0], [101, 2002, 102, 0, 0]])
    mask = (ids != 0).long()
    v, t = dual(video, ids, mask)
    assert v.shape == t.shape == (2, config.width)
    # a fresh LayerNorm: zero mean, unit variance features
    assert torch.allclose(v.mean(-1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(t.std(-1, unbiased=False), torch.ones(2), atol=1e-2)
    # the copies train on their own: the pretrained model is untouched by a step
    loss = (v.sum() + t.sum()) ** 2
    loss.backward()
    with torch.no_grad():
        for p in dual.parameters():
            if p.grad is not None:
                p.sub_(p.grad.sign() * 0.1)
    assert all(torch.equal(v, before[k]) for k, v in pretrained.state_dict().items())
    assert dual.video_encoder.blocks[0].mlp.fc1.weight.grad is not None
    assert dual.text_encoder.blocks[0].mlp.fc1.weight.grad is not None
    assert not torch.equal(dual.text_encoder.blocks[0].mlp.fc1.weight,
                           dual.video_encoder.blocks[0].mlp.fc1.weight)


# -- the CLI on a tiny checkpoint -------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_json(tmp_path_factory, synth_dir) -> Path:
    """The synthetic held-out clips (paths relative to ``synth_dir``, the --video-root), plus
    one entry whose video is missing."""
    entries = json.loads((synth_dir / "test.json").read_text())[:TEST_CLIPS]
    entries.append({"video_id": "29999999", "video": "videos/test/gone.mp4",
                    "caption": "a clip that was never rendered"})
    return _write(tmp_path_factory.mktemp("eval_json") / "test.json", entries)


def _eval(checkpoint: Path, data: Path, out: Path, *extra: str) -> dict:
    code = vtp_main(["eval", str(checkpoint), "--data", str(data), "--out", str(out),
                     "--workers", "2", "--no-progress", "--batch-size", "4", *extra])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, tiny_checkpoint, eval_json, synth_dir) -> tuple[Path, str]:  # noqa: F811
    """`vtp eval` on the test json (sharded into OUT/test-shards): (OUT, printed output)."""
    out = tmp_path_factory.mktemp("eval_json_run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = vtp_main(["eval", str(tiny_checkpoint), "--data", str(eval_json), "--out",
                         str(out), "--workers", "2", "--no-progress", "--batch-size", "4",
                         "--video-root", str(synth_dir)])
    assert code == 0
    return out, printed.getvalue()


def test_eval_cli_on_a_json_with_a_missing_video(json_run, tiny_checkpoint, tmp_path):  # noqa: F811
    out, printed = json_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and {"chance_r1", "n", "failed"} <= set(metrics)
    assert metrics["n"] == TEST_CLIPS and metrics["failed"] == 1
    assert metrics["chance_r1"] == pytest.approx(100 / TEST_CLIPS)
    assert metrics["mode"] == "zero-shot" and metrics["views"] == 1
    for key in METRIC_KEYS:
        assert math.isfinite(metrics[key])
    assert 1 <= metrics["t2v_medr"] <= TEST_CLIPS and 1 <= metrics["v2t_meanr"] <= TEST_CLIPS
    assert "chance" in printed and f"{metrics['chance_r1']:.2f}" in printed
    assert "1 test clips failed" in printed
    assert (out / "retrieval.md").read_text().count("|") > 10
    # the same shards as --data: no sharding, same clips, same numbers
    again = _eval(tiny_checkpoint, out / "test-shards", tmp_path / "from-shards")
    assert again["n"] == TEST_CLIPS and again["failed"] == 0
    assert {k: again[k] for k in METRIC_KEYS} == {k: metrics[k] for k in METRIC_KEYS}
    # in galleries of 3 every query is ranked among 3 clips, and the protocol line says so
    grouped = _eval(tiny_checkpoint, out / "test-shards", tmp_path / "galleries",
                    "--gallery-size", "3")
    assert grouped["n"] == TEST_CLIPS and grouped["galleries"] == 2
    assert grouped["chance_r1"] == pytest.approx(100 / 3) and grouped["t2v_meanr"] <= 3
    protocol = (tmp_path / "galleries" / "retrieval.md").read_text()
    assert "2 disjoint galleries of up to 3" in protocol


def test_more_views_change_video_features_not_the_clips(json_run, tiny_checkpoint, tmp_path):  # noqa: F811
    from evaluation.evaluate import EvalConfig, clip_features, eval_data_config
    from recipes.checkpoint import load_data_settings, load_trained_model

    shards = json_run[0]
    model = load_trained_model(tiny_checkpoint)
    settings = load_data_settings(tiny_checkpoint)
    assert settings["interpolation"] == "linear"  # the recipe's filter travels to evaluation
    runs = {}
    for views in (1, 2):
        cfg = EvalConfig(data=str(shards / "test-shards"), out=str(tmp_path), views=views,
                         batch_size=4, device="cpu")
        data = eval_data_config(model, shards / "test-shards", cfg, settings)
        runs[views] = clip_features(model, data, "cpu", progress=False)
    (keys1, video1, text1), (keys2, video2, text2) = runs[1], runs[2]
    assert keys1 == keys2 and len(keys1) == TEST_CLIPS
    assert torch.equal(text1, text2)
    assert video1.shape == video2.shape
    assert not torch.allclose(video1, video2, atol=1e-6)
    two = _eval(tiny_checkpoint, shards / "test-shards", tmp_path / "two-views", "--views", "2")
    assert two["views"] == 2 and two["n"] == TEST_CLIPS


def test_three_by_three_views_are_averaged_and_stated(json_run, tiny_checkpoint, tmp_path):  # noqa: F811
    from evaluation.evaluate import EvalConfig, clip_features, eval_data_config
    from recipes.checkpoint import load_data_settings, load_trained_model

    shards = json_run[0] / "test-shards"
    model = load_trained_model(tiny_checkpoint)
    features = {}
    for crops in (1, 3):
        cfg = EvalConfig(data=str(shards), out=str(tmp_path), views=3, crops=crops, batch_size=4,
                         device="cpu")
        data = eval_data_config(model, shards, cfg, load_data_settings(tiny_checkpoint))
        features[crops] = clip_features(model, data, "cpu", progress=False)[1]
    assert not torch.allclose(features[1], features[3], atol=1e-6)  # the side crops count
    out = tmp_path / "3x3"
    metrics = _eval(tiny_checkpoint, shards, out, "--recipe", "finetune-msrvtt",
                    "--split-name", "synthetic 1k-A-like")
    assert (metrics["views"], metrics["crops"]) == (3, 3)  # the MSR-VTT recipe's protocol
    assert metrics["split"] == "synthetic 1k-A-like" and "pessimistic" in metrics["tie_rule"]
    first = (out / "retrieval.md").read_text().splitlines()[0]
    assert first.startswith("synthetic 1k-A-like: 6 clips, zero-shot, 3 temporal clip(s) x 3 "
                            "spatial crop(s)") and "ties: pessimistic" in first


def test_finetune_mode_trains_the_dual_encoder(json_run, tiny_checkpoint, train_shards,  # noqa: F811
                                               tmp_path, capsys):
    out = tmp_path / "finetuned"
    metrics = _eval(tiny_checkpoint, json_run[0] / "test-shards", out, "--mode", "finetune",
                    "--recipe", "finetune-tiny", "--finetune-data", str(train_shards),
                    "--finetune-steps", "3", "--finetune-batch-size", "4")
    assert metrics["mode"] == "finetune" and metrics["n"] == TEST_CLIPS
    assert METRIC_KEYS <= set(metrics)
    log = json.loads((out / "finetune_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in log["steps"])
    # in-batch negatives of 4: an untrained contrastive pair of CEs starts near 2 ln 4
    assert log["steps"][0]["loss"] == pytest.approx(2 * math.log(4), rel=0.5)
    assert log["config"]["max_duration"] == "3ba" and log["config"]["batch_size"] == 4
    assert log["config"]["crop_scales"] == [1.0, 0.875, 0.75]  # from finetune-tiny.yaml
    assert metrics["split"] == "synthetic held-out"
    assert (metrics["views"], metrics["crops"]) == (1, 1)
    assert (out / "finetune_loss.png").read_bytes()[:4] == b"\x89PNG"
    summary = log["summary"]
    assert summary["steps"] == 3 and summary["chance_loss"] == pytest.approx(2 * math.log(4))
    assert summary["first_loss"] == pytest.approx(log["steps"][0]["loss"])
    printed = capsys.readouterr().out
    assert "fine-tuned the dual encoder: 3 steps" in printed and "finetune_loss.png" in printed


def _usage_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["eval", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_usage_exits_2_with_a_message(tiny_checkpoint, eval_json, train_shards, tmp_path,  # noqa: F811
                                          synth_dir, capsys):
    err = _usage_error(capsys, str(tmp_path / "none.pt"), "--data", str(eval_json),
                       "--out", str(tmp_path / "a"))
    assert "none.pt" in err and "does not exist" in err
    err = _usage_error(capsys, str(tiny_checkpoint), "--data", str(tmp_path / "nothing"),
                       "--out", str(tmp_path / "b"))
    assert "--data" in err
    err = _usage_error(capsys, str(tiny_checkpoint), "--data", str(eval_json), "--out",
                       str(tmp_path / "c"), "--mode", "finetune", "--video-root", str(synth_dir))
    assert "--finetune-data" in err
    err = _usage_error(capsys, str(tiny_checkpoint), "--data", str(train_shards), "--out",
                       str(tmp_path / "d"), "--mode", "finetune", "--finetune-data",
                       str(train_shards), "--finetune-batch-size", "64", "--no-progress")
    assert "fewer than the batch size 64" in err
    err = _usage_error(capsys, str(tiny_checkpoint), "--data", str(train_shards), "--out",
                       str(tmp_path / "e"), "--set", "frames=8", "--no-progress")
    assert "unknown data setting" in err
