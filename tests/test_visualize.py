"""`vtp visualize` on the tiny checkpoint (CPU): reconstructions (PNG + GIF) at two mask
ratios, MLM fills, VTC scores; a single video file; bad input."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from train_fixtures import (  # noqa: F401  (session fixtures)
    recipe_video_mask,
    tiny_checkpoint,
    train_shards,
)

from commands.cli import main as vtp_main


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory, tiny_checkpoint, train_shards):  # noqa: F811
    out = tmp_path_factory.mktemp("visualize")
    code = vtp_main(["visualize", str(tiny_checkpoint), "--data", str(train_shards), "--out",
                     str(out), "--mask-ratio", "0.75", "--num", "3"])
    assert code == 0
    return out, json.loads((out / "visualize.json").read_text())


def test_reconstructions_at_the_recipe_ratio_and_the_chosen_one(shard_run):
    out, result = shard_run
    recipe = recipe_video_mask()
    assert recipe != 0.75, "the test needs a chosen ratio other than the recipe's"
    assert [r["mask_ratio"] for r in result["reconstructions"]] == [recipe, 0.75]
    for ratio in (f"{recipe:g}", "0.75"):
        with Image.open(out / f"reconstruction-mask{ratio}.png") as png:
            png.load()
            assert png.width > 200 and png.height > 100
        with Image.open(out / f"reconstruction-mask{ratio}.gif") as gif:
            assert gif.n_frames == 8  # every frame of the tiny model's 8-frame clips
            # 3 clips of 32 px at 4x in rows, masked | reconstruction | target in columns
            assert gif.size == (3 * (32 * 4 + 2), 3 * (32 * 4 + 2))
    assert len(result["keys"]) == 3


def test_mlm_fills_and_vtc_scores(shard_run):
    out, result = shard_run
    assert len(result["mlm"]) == len(result["vtc"]) == 3
    for row in result["mlm"]:
        assert row["masked_words"] >= 1 and 0 <= row["correct"] <= row["masked_words"]
        assert row["masked"].count("[MASK]") == row["masked_words"]
        assert row["filled"].count("[") == row["masked_words"]
    for row in result["vtc"]:
        assert -1 <= row["own"] <= 1 and -1 <= row["best_other"] <= 1
        assert row["best_other_key"] in result["keys"] and row["best_other_key"] != row["key"]
        assert row["own_wins"] == (row["own"] > row["best_other"])
    assert "[MASK]" in (out / "mlm.md").read_text()
    assert "| clip | own caption |" in (out / "vtc.md").read_text()


def test_one_video_file(tmp_path, tiny_checkpoint, synth_dir):  # noqa: F811
    entry = json.loads((synth_dir / "test.json").read_text())[0]
    out = tmp_path / "one"
    code = vtp_main(["visualize", str(tiny_checkpoint), "--data", str(synth_dir / entry["video"]),
                     "--out", str(out), "--caption", entry["caption"]])
    assert code == 0
    result = json.loads((out / "visualize.json").read_text())
    assert result["keys"] == ["clip0"]
    assert (out / f"reconstruction-mask{recipe_video_mask():g}.gif").is_file()
    assert result["vtc"][0]["best_other"] is None  # one clip: nothing to compare with
    # the caption given on the command line is the one the MLM head fills in
    words = re.findall(r"[a-z]+", entry["caption"].lower())[:5]
    assert re.findall(r"[a-z]+", result["mlm"][0]["caption"])[:5] == words


@pytest.mark.parametrize("case, message", [
    ("missing checkpoint", "checkpoint {tmp}/gone.pt does not exist"),
    ("not a checkpoint", "is truncated or not a torch checkpoint"),
    ("wrong shard folder", "holds no mds shards"),
    ("not a video", "is neither a shard folder nor a video"),
    ("bad ratio", "--mask-ratio must be between 0 and 1"),
])
def test_bad_input_exits_2_with_a_message(case, message, tmp_path, tiny_checkpoint, train_shards,  # noqa: F811
                                          capsys):
    checkpoint, data, extra = str(tiny_checkpoint), str(train_shards), []
    if case == "missing checkpoint":
        checkpoint = str(tmp_path / "gone.pt")
    elif case == "not a checkpoint":
        checkpoint = str(tmp_path / "notes.pt")
        (tmp_path / "notes.pt").write_text("not a checkpoint")
    elif case == "wrong shard folder":
        data = str(tmp_path)
    elif case == "not a video":
        data = str(tmp_path / "captions.txt")
        (tmp_path / "captions.txt").write_text("a red square")
    else:
        extra = ["--mask-ratio", "1.0"]
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["visualize", checkpoint, "--data", data, "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "vtp visualize: error: " in err and message.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err
