"""Run cards and curves: `vtp train` writes run_card.json/.md and curves.png beside its
checkpoints; `vtp eval` writes its card next to metrics.json, pointing at the training card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from train_fixtures import (  # noqa: F401  (session fixtures)
    recipe_video_mask,
    tiny_checkpoint,
    train_shards,
)

from commands.cli import main as vtp_main
from recipes.curves import read_curves
from recipes.provenance import data_identity
from recipes.run_card import card_folder


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_writes_a_run_card_beside_its_checkpoints(tiny_checkpoint, train_shards):  # noqa: F811
    folder = tiny_checkpoint.parent
    card = json.loads((folder / "run_card.json").read_text())
    assert card["kind"] == "train" and card["status"] == "finished"
    assert "train" in card["command"] and card["command"][-1] == "loggers.tensorboard=null"
    assert any(a == f"data.path={train_shards}" for a in card["command"])
    assert card["recipe"]["trainer"]["global_batch_size"] == 4
    assert card["recipe"]["model"]["video_mask_ratio"] == recipe_video_mask()
    assert len(card["git"]["revision"]) == 40 and isinstance(card["git"]["dirty"], bool)
    assert card["packages"]["torch"] and card["packages"]["composer"] == "0.32.1"
    assert card["hardware"]["cores"] >= 1
    data = card["data"]
    assert data["samples"] == 16
    assert data["index_sha256"] == _sha(train_shards / "mds" / "index.json")
    assert data["manifest_sha256"] == _sha(train_shards / "manifest.parquet")
    assert card["progress"]["batches"] == 4 and card["progress"]["samples"] == 16
    assert card["progress"]["samples_per_second"] > 0
    assert card["start_time"] <= card["end_time"]
    assert card["losses"]["final"]["step"] == 4
    assert set(card["losses"]["best"]) == {"total", "mvm", "mlm", "vtc", "vtm"}
    assert all(b["value"] <= card["losses"]["final"].get(t, b["value"]) + 1e-9
               for t, b in card["losses"]["best"].items())
    assert [c["file"] for c in card["checkpoints"]] == [tiny_checkpoint.resolve().name]
    assert card["checkpoints"][0]["exists"]
    md = (folder / "run_card.md").read_text()
    assert "# Run card: tiny-synthetic (finished)" in md and data["index_sha256"] in md
    assert tiny_checkpoint.resolve().name in md


def test_train_draws_curves_of_every_term_and_lr(tiny_checkpoint):  # noqa: F811
    folder = tiny_checkpoint.parent
    png = folder / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    points = read_curves(folder / "curves.jsonl")
    assert [p["step"] for p in points] == [1, 2, 3, 4]
    assert all({"lr", "total", "mvm", "mlm", "vtc", "vtm"} <= set(p) for p in points)


def test_curves_drop_points_a_resumed_run_trains_again(tmp_path):
    path = tmp_path / "curves.jsonl"
    lines = [{"step": s, "total": 10 - s} for s in (1, 2, 3, 4, 5)] + [{"step": 4, "total": 0.5}]
    path.write_text("".join(json.dumps(p) + "\n" for p in lines) + '{"step": 6, "tot')
    assert [p["total"] for p in read_curves(path)] == [9, 8, 7, 0.5, 5]  # cut line skipped
    assert [p["step"] for p in read_curves(path, up_to=3)] == [1, 2, 3]


def test_card_folder_is_local_or_none():
    assert card_folder("runs/{run_name}/checkpoints", "r1") == Path("runs/r1/checkpoints")
    assert card_folder(None, "r1") is None and card_folder("s3://bucket/ckpt", "r1") is None


def test_data_identity_of_missing_and_wds_folders(tmp_path):
    missing = data_identity(tmp_path / "nowhere")
    assert missing["samples"] is None and missing["index_sha256"] is None
    wds = tmp_path / "shards" / "wds"
    wds.mkdir(parents=True)
    (wds / "shard-000000.idx").write_text("v1.2 2\nmp4 0 10 a.mp4\nmp4 10 10 b.mp4\n")
    found = data_identity(tmp_path / "shards", "wds")
    assert found["samples"] == 2 and len(found["index_sha256"]) == 64


def test_eval_writes_its_card_next_to_metrics(tiny_checkpoint, train_shards, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    code = vtp_main(["eval", str(tiny_checkpoint), "--data", str(train_shards), "--out", str(out),
                     "--workers", "1", "--no-progress", "--batch-size", "8"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    card = json.loads((out / "run_card.json").read_text())
    assert card["kind"] == "eval"
    assert card["checkpoint"]["sha256"] == _sha(tiny_checkpoint)
    train_card = tiny_checkpoint.parent / "run_card.json"
    assert card["train_card"]["path"] == str(train_card.resolve())
    assert card["train_card"]["sha256"] == _sha(train_card)
    assert card["train_card"]["run_name"] == "tiny-synthetic"
    assert card["split"]["name"] == train_shards.name and card["n"] == metrics["n"] == 16
    assert card["views"] == 1 and card["mode"] == "zero-shot"
    assert "worse rank" in card["tie_rule"]
    assert card["metrics"]["t2v_r1"] == metrics["t2v_r1"]
    assert "trained by: `" in (out / "run_card.md").read_text()
