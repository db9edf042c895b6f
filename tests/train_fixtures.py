"""Small shards for the training tests, made by `vtp shard` from the synthetic test dataset.

16 clean clips (no caption or file defect, no duplicate), cut to 2 s, short side 48, VP9,
MDS only: the tiny model sees 32x32 crops of 8 frames, so bigger clips would only slow the
CPU tests down.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from commands.cli import main as vtp_main

NUM_CLIPS = 16
SHARD_ARGS = ["--format", "mds", "--codec", "vp9", "--short-side", "48", "--max-seconds", "2",
              "--gop", "16", "--workers", "2", "--no-progress"]


def clean_rows(ground_truth: list[dict], count: int) -> list[str]:
    """Video ids of the first ``count`` training rows without any injected defect."""
    ids = [r["videoid"] for r in ground_truth if r["split"] == "train" and r["file_defect"] is None
           and not r["caption_defects"] and r["dup_of"] is None]
    assert len(ids) >= count, f"the synthetic test set has only {len(ids)} clean clips"
    return ids[:count]


def build_train_shards(synth_dir: Path, videoids: list[str], out: Path) -> Path:
    """Runs `vtp shard` on the rows ``videoids`` of ``synth_dir``'s WebVid CSV; returns OUT."""
    table = pacsv.read_csv(synth_dir / "results.csv",
                           convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    keep = pc.is_in(pc.cast(table["videoid"], "string"), value_set=pc.cast(videoids, "string"))
    out.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table.filter(keep), out / "manifest.csv")
    code = vtp_main(["shard", str(out / "manifest.csv"), "--video-root",
                     str(synth_dir / "videos"), "--out", str(out / "shards"), *SHARD_ARGS])
    assert code == 0, f"vtp shard failed with status {code}"
    return out / "shards"


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory, synth_dir, ground_truth) -> Path:
    """A `vtp shard` output folder (holding mds/) with 16 clean synthetic clips."""
    return build_train_shards(synth_dir, clean_rows(ground_truth, NUM_CLIPS),
                              tmp_path_factory.mktemp("train_shards"))


def recipe_video_mask() -> float:
    """The tiny recipe's video mask ratio, which the fixture checkpoint is trained at."""
    import recipes
    from recipes.config import load_recipe

    recipe = Path(recipes.__file__).parent / "tiny-synthetic.yaml"
    return load_recipe(recipe, ["data.path=unused"]).model.video_mask_ratio


def train_tiny_checkpoint(shards: Path, work: Path, batches: int = 4) -> Path:
    """Trains the tiny recipe for ``batches`` steps of 4 clips in a subprocess (as a user runs
    `vtp train`); returns the final checkpoint."""
    import os
    import subprocess
    import sys

    import recipes

    recipe = Path(recipes.__file__).parent / "tiny-synthetic.yaml"
    overrides = [f"data.path={shards}", "trainer.global_batch_size=4",
                 "trainer.device_train_microbatch_size=4", f"trainer.max_duration={batches}ba",
                 f"trainer.save_interval={batches}ba", f"trainer.save_folder={work}/ckpt",
                 "loggers.console=false", "loggers.progress_bar=false", "loggers.file=null",
                 "loggers.tensorboard=null"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "commands.cli", "train", str(recipe), *overrides],
                          cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"training failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    checkpoint = work / "ckpt" / "latest-rank0.pt"
    assert checkpoint.is_file(), f"no checkpoint in {work / 'ckpt'}"
    return checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, train_shards) -> Path:
    """A `vtp train` checkpoint of the tiny recipe after 4 steps on ``train_shards``."""
    return train_tiny_checkpoint(train_shards, tmp_path_factory.mktemp("tiny_checkpoint"))
