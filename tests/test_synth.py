"""The synthetic WebVid-format dataset: determinism, schema, defects and decodability."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tools.media import ProbeError, probe_frames
from tools.synth import PRESETS, SynthConfig, generate
from tools.synth.captions import english_caption
from tools.synth.dataset import CAPTION_DEFECTS, FILE_DEFECTS, WEBVID_COLUMNS
from tools.synth.scene import draw_scene, held_out_pairs


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_rows(tmp_path):
    config = SynthConfig(num_clips=8, num_test=2, seed=3, defect_rate=0.5, workers=2)
    generate(config, tmp_path / "a", progress=False)
    generate(config, tmp_path / "b", progress=False)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    other = SynthConfig(num_clips=8, num_test=2, seed=4, defect_rate=0.5, workers=2)
    generate(other, tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "results.csv").read_bytes() != a["results.csv"]


def test_results_csv_has_exactly_the_webvid_columns(synth_dir):
    with open(synth_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == WEBVID_COLUMNS
        rows = list(reader)
    assert len(rows) == 40
    assert len({r["videoid"] for r in rows}) == 40
    for r in rows:
        assert re.fullmatch(r"PT\d\dH\d\dM\d\dS", r["duration"]), r["duration"]
        assert re.fullmatch(r"\d{6}_\d{6}", r["page_dir"]), r["page_dir"]
        assert r["contentUrl"].startswith("https://") and r["videoid"] in r["contentUrl"]


def test_ground_truth_covers_every_defect_kind(ground_truth):
    train = [r for r in ground_truth if r["split"] == "train"]
    caption_kinds = Counter(k for r in train for k in r["caption_defects"])
    assert set(CAPTION_DEFECTS) <= set(caption_kinds), caption_kinds
    assert set(FILE_DEFECTS) <= {r["file_defect"] for r in train}
    by_id = {r["videoid"]: r for r in train}
    for r in train:
        kinds = r["caption_defects"]
        if "non_english" in kinds:
            assert r["lang"] != "en" and r["caption_clean"] is None
        if "empty" in kinds:
            assert r["caption_raw"].strip() == "" and r["caption_clean"] is None
        if "url" in kinds:
            assert re.search(r"https?://|www\.", r["caption_raw"])
        if "duplicate" in kinds:
            assert by_id[r["dup_of"]]["caption_raw"] == r["caption_raw"]
        if not kinds:
            assert r["caption_raw"] == r["caption_clean"]
        if r["caption_clean"] is not None:
            assert not re.search(r"\d|http|www|&\w+;", r["caption_clean"]), r["caption_clean"]


@pytest.mark.parametrize("kind", FILE_DEFECTS)
def test_each_broken_file_kind_is_really_broken(synth_dir, ground_truth, kind):
    rows = [r for r in ground_truth if r["file_defect"] == kind]
    assert rows
    for r in rows:
        path = synth_dir / r["path"]
        assert path.exists() == (kind != "missing")
        with pytest.raises(ProbeError):
            probe_frames(path)


def test_every_good_file_decodes_with_the_right_frame_count(synth_dir, ground_truth):
    good = [r for r in ground_truth if r["file_defect"] is None]
    assert len(good) >= 40
    for r in good:
        stream = probe_frames(synth_dir / r["path"])
        assert stream["codec_name"] == "h264"
        assert (stream["width"], stream["height"]) == (r["width"], r["height"])
        assert stream["nb_read_frames"] == r["num_frames"] == r["duration_s"] * r["fps"]


def test_duplicate_rows_reuse_the_original_clip(synth_dir, ground_truth):
    dups = [r for r in ground_truth if r["dup_of"] and r["file_defect"] is None]
    by_id = {r["videoid"]: r for r in ground_truth}
    for r in dups:
        original = by_id[r["dup_of"]]
        if original["file_defect"] is None:
            copy, source = synth_dir / r["path"], synth_dir / original["path"]
            assert copy.read_bytes() == source.read_bytes()


def test_test_split_holds_unseen_combinations(synth_dir, ground_truth):
    entries = json.loads((synth_dir / "test.json").read_text())
    assert len(entries) == 10
    for e in entries:
        assert e["caption"] and (synth_dir / e["video"]).is_file()
    train_pairs = {(r["colour"], r["shape"]) for r in ground_truth if r["split"] == "train"}
    test_pairs = {(r["colour"], r["shape"]) for r in ground_truth if r["split"] == "test"}
    assert test_pairs and not test_pairs & train_pairs
    assert test_pairs <= held_out_pairs(1)


def test_held_out_pairs_leave_every_attribute_in_training():
    held = held_out_pairs(0)
    assert len(held) == 8
    shapes = Counter(s for _, s in held)
    assert max(shapes.values()) <= 2  # each shape is still seen with at least 6 colours


def test_same_scene_gets_varied_captions():
    rng = np.random.default_rng(0)
    scene = draw_scene(rng, "train", held_out_pairs(0))
    captions = {english_caption(rng, scene) for _ in range(50)}
    assert len(captions) >= 10
    for c in captions:
        assert scene.colour in c.lower() and scene.shape in c.lower()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_clips"):
        SynthConfig(num_clips=0)
    with pytest.raises(ValueError, match="defect_rate"):
        SynthConfig(defect_rate=1.5)
    with pytest.raises(ValueError, match="even"):
        SynthConfig(width=321)


def test_ground_truth_table_matches_files(synth_dir):
    table = pq.read_table(synth_dir / "ground_truth.parquet")
    assert table.num_rows == 50
    assert {"videoid", "split", "caption_raw", "caption_clean", "caption_defects",
            "file_defect", "num_frames"} <= set(table.column_names)


# -- presets -----------------------------------------------------------------------------
DEMO_TEST_CONFIG = SynthConfig(num_clips=12, num_test=8, seed=2, defect_rate=0.0, workers=2,
                               width=64, height=48, preset="demo")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-demo") / "dataset"
    generate(DEMO_TEST_CONFIG, out, progress=False)
    return out


def test_default_preset_is_the_first_generator():
    from tools.synth.dataset import plan

    config = SynthConfig(num_clips=30, num_test=6, seed=5, workers=1)
    assert config.preset == "hard"
    hard = plan(replace(config, preset="hard"))
    assert [r.scene for r in plan(config)] == [r.scene for r in hard]
    held = held_out_pairs(5)
    assert held == held_out_pairs(5, PRESETS["hard"])


def test_demo_preset_names_itself_in_the_dataset(demo_dir):
    meta = json.loads((demo_dir / "synth.json").read_text())
    demo = PRESETS["demo"]
    assert meta["config"]["preset"] == "demo"
    assert meta["preset"]["sizes"] == demo.sizes and meta["preset"]["clutter"] == demo.clutter
    rows = pq.read_table(demo_dir / "ground_truth.parquet").to_pylist()
    assert {r["preset"] for r in rows} == {"demo"}
    assert {r["colour"] for r in rows} <= set(demo.colours)
    assert {r["shape"] for r in rows} <= set(demo.shapes)
    assert all(r["distractor"] is None and not r["noise"] and r["count"] == 1 for r in rows)
    assert set(meta["oracle_t2v_r1"]) == {"pair_only", "appearance_only", "motion_only",
                                          "pair_and_motion", "all_attributes"}


def test_demo_preset_split_stays_compositional(demo_dir):
    rows = pq.read_table(demo_dir / "ground_truth.parquet").to_pylist()
    train = {(r["colour"], r["shape"]) for r in rows if r["split"] == "train"}
    test = {(r["colour"], r["shape"]) for r in rows if r["split"] == "test"}
    assert test and not test & train
    held = held_out_pairs(2, PRESETS["demo"])
    assert test <= held and len(held) == len(PRESETS["demo"].colours)
    # every colour and every shape keeps training pairs
    allowed = {(c, s) for c in PRESETS["demo"].colours for s in PRESETS["demo"].shapes} - held
    assert {c for c, _ in allowed} == set(PRESETS["demo"].colours)
    assert {s for _, s in allowed} == set(PRESETS["demo"].shapes)


def test_demo_captions_use_one_wording(demo_dir):
    entries = json.loads((demo_dir / "test.json").read_text())
    rows = {r["videoid"]: r for r in pq.read_table(demo_dir / "ground_truth.parquet").to_pylist()}
    for e in entries:
        r = rows[e["video_id"]]
        expected = f"a {r['size']} {r['colour']} {r['shape']} moves {r['speed']} " + \
            ", then ".join(r["motion"].split(","))
        assert e["caption"].startswith(expected), (e["caption"], expected)


def test_demo_objects_are_bigger_than_hard_ones():
    from tools.synth.render import render

    scene = draw_scene(np.random.default_rng(0), "train", held_out_pairs(0, PRESETS["demo"]),
                       PRESETS["demo"])
    frames = render(scene, fps=8, height=48, width=64, rng=np.random.default_rng(1),
                    preset=PRESETS["demo"])
    from tools.synth.scene import COLOURS

    painted = (frames[0] == np.array(COLOURS[scene.colour], dtype=np.uint8)).all(axis=-1).mean()
    assert painted >= 0.5 * PRESETS["demo"].sizes[scene.size] ** 2 * 48 / 64


def test_oracle_scores_count_ties():
    from tools.synth.oracle import expected_r1, oracle_r1

    scenes = [dict(colour="red", shape="circle", size="small", count=1, background="dark",
                   distractor=None, motion=m, speed="slowly")
              for m in ("left", "left", "up", "down")]
    # motion splits them into {left, left}, {up}, {down}: (1/2 + 1/2 + 1 + 1) / 4
    assert expected_r1(scenes, ("motion",)) == pytest.approx(75.0)
    assert expected_r1(scenes, ("colour",)) == pytest.approx(25.0)
    assert oracle_r1(scenes)["all_attributes"] == pytest.approx(75.0)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="preset"):
        SynthConfig(preset="easy-ish")


def test_hard_preset_renders_the_first_generators_pixels():
    # sha256 of these six clips as the first generator (before presets gained `wrap` and
    # `durations`) rendered them: the hard preset must stay byte-identical.
    import hashlib

    from tools.synth.render import render

    rng, digest = np.random.default_rng(11), hashlib.sha256()
    for i in range(6):
        scene = draw_scene(rng, "train", held_out_pairs(11), PRESETS["hard"])
        digest.update(render(scene, fps=8, height=48, width=64,
                             rng=np.random.default_rng(i)).tobytes())
    assert digest.hexdigest() == "ef334422d505d17bf9cb746a971e7d5dd0346a128ba50600ada80d91915ba723"


@pytest.mark.parametrize("preset", ["demo", "easy"])
def test_paths_stay_inside_the_frame_and_follow_the_caption(preset):
    from tools.synth.render import render, sprite
    from tools.synth.scene import COLOURS, DIRECTIONS

    p, rng = PRESETS[preset], np.random.default_rng(4)
    assert not p.wrap
    for i in range(12):
        scene = draw_scene(rng, "train", held_out_pairs(4, p), p)
        assert p.durations[0] <= scene.duration_s <= p.durations[1]
        frames = render(scene, fps=8, height=48, width=48, rng=np.random.default_rng(i), preset=p)
        painted = (frames == np.array(COLOURS[scene.colour], dtype=np.uint8)).all(axis=-1)
        side = max(6, int(p.sizes[scene.size] * 48))
        # never clipped by an edge: every frame shows the whole sprite
        assert (painted.sum(axis=(1, 2)) == sprite(scene.shape, side).sum()).all()
        ys, xs = (np.array([np.nonzero(f)[k].mean() for f in painted]) for k in (0, 1))
        half = len(frames) // len(scene.motion)
        for leg, direction in enumerate(scene.motion):
            dx, dy = DIRECTIONS[direction]
            span = slice(leg * half, (leg + 1) * half)
            moved = np.array([xs[span][-1] - xs[span][0], ys[span][-1] - ys[span][0]])
            assert moved @ np.array([dx, dy]) > 0, (scene, leg)


def test_preset_durations_are_checked():
    from tools.synth.presets import Preset

    with pytest.raises(ValueError, match="durations"):
        Preset(name="x", durations=(5, 4))


def test_top1_agreement_tells_a_read_attribute_from_an_ignored_one():
    from tools.synth.oracle import top1_agreement

    colours, motions = ["red", "red", "blue", "blue"], ["left", "left,up", "up", "up"]
    scenes = [dict(colour=c, shape="circle", size="small", count=1, background="dark",
                   distractor=None, motion=m, speed="slowly")
              for c, m in zip(colours, motions, strict=True)]
    # each query's top clip is the other clip of its colour: colour always agrees
    reads = top1_agreement(scenes, [1, 0, 3, 2])
    assert reads["colour"] == {"top1": 1.0, "random": pytest.approx(1 / 3, abs=1e-3)}
    assert reads["first_leg"]["top1"] == 1.0 and reads["motion"]["top1"] == 0.5
    assert "shape" not in reads  # one value among the clips: nothing to read
