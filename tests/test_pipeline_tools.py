"""`vtp show-batch` and `vtp bench pipeline` on small shards; the limit's frame accounting."""

from __future__ import annotations

import json

import pytest

from commands.cli import main


def test_frames_to_decode_counts_from_the_previous_key_frame():
    needed_frames = pytest.importorskip("benchmarks.peers").needed_frames
    assert needed_frames([0, 4, 8], list(range(20))) == [0, 4, 8]  # intra-only: just those
    assert len(needed_frames([4, 8], [0, 32])) == 9  # 0..8
    assert len(needed_frames([33, 40, 40], [0, 32])) == 9  # 32..40, a repeat costs nothing
    assert len(needed_frames([10, 40], [0, 32])) == 11 + 9


def test_show_batch_writes_png_and_mask_stats(pipeline_shards, tmp_path, capsys):
    assert main(["show-batch", str(pipeline_shards["vp9"].root), "--out", str(tmp_path),
                 "--batch-size", "2"]) == 0
    assert (tmp_path / "batch.png").stat().st_size > 10_000
    stats = json.loads((tmp_path / "mask_stats.json").read_text())
    assert len(stats["samples"]) == 2
    grid = stats["config"]["grid"]
    cells = grid[1] * grid[2]
    for sample in stats["samples"]:
        assert sample["is_tube"] is True
        assert abs(sample["video_mask_ratio"] - round(0.9 * cells) / cells) < 1e-3
        assert 0.5 < sample["text_mask_ratio"] <= 1.0
    assert "batch.png" in capsys.readouterr().out


def test_bench_pipeline_prints_rate_limit_and_ratio(pipeline_shards, capsys):
    assert main(["bench", "pipeline", str(pipeline_shards["mjpeg"].root), "--epochs", "2",
                 "--batch-size", "2", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out
    if "bare limit not run" not in out:  # the bench extra is installed
        assert "bare decoder limit (PyAV, 16.0 frames decoded per sample" in out
        ratio = float(out.split("vtp / limit ")[1].split()[0])
        assert ratio > 0


def test_show_batch_on_h264_with_cpu_is_a_usage_error(pipeline_shards, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["show-batch", str(pipeline_shards["h264"].root), "--out", str(tmp_path),
              "--batch-size", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "h264" in err and "vtp shard --codec vp9" in err


def test_pipeline_reads_what_vtp_shard_writes(synth_dir, tmp_path):
    import pyarrow.parquet as pq

    from pipeline import DataConfig, build_dataloader

    out = tmp_path / "shards"
    assert main(["shard", str(synth_dir / "results.csv"), "--video-root", str(synth_dir / "videos"),
                 "--out", str(out), "--codec", "mjpeg", "--max-seconds", "4", "--workers", "2",
                 "--no-progress"]) == 0
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    ok = {row["key"] for row in manifest if row["status"] == "ok"}
    assert ok
    for fmt in ("mds", "wds"):
        cfg = DataConfig(path=str(out), format=fmt, batch_size=4, image_size=64,
                         text_max_length=16)
        batch = next(iter(build_dataloader(cfg, clean_shared_memory=False)))
        assert set(batch["keys"]) <= ok and batch["video"].shape == (4, 3, 16, 64, 64)
