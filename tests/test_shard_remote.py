"""`vtp shard` and `vtp merge` with a bucket (loopback S3) for the manifest, videos and output."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_shard_array import SMALL, small_manifest

from commands.cli import main as vtp_main


def upload_videos(s3, bucket: str, synth_dir: Path, manifest: Path) -> None:
    """Puts the manifest's videos at s3://bucket/videos/{page_dir}/{videoid}.mp4."""
    import pyarrow.csv as pacsv

    client = s3.client()
    no_nulls = pacsv.ConvertOptions(strings_can_be_null=False)
    table = pacsv.read_csv(manifest, convert_options=no_nulls)
    for row in table.to_pylist():
        rel = f"{row['page_dir']}/{row['videoid']}.mp4"
        client.upload_file(str(synth_dir / "videos" / rel), bucket, f"videos/{rel}")


def read_remote(s3, url: str, name: str) -> bytes:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    out = io.BytesIO()
    s3.client().download_fileobj(bucket, f"{key}/{name}", out)
    return out.getvalue()


def remote_rows(s3, url: str) -> list[dict]:
    return pq.read_table(io.BytesIO(read_remote(s3, url, "manifest.parquet"))).to_pylist()


def stream_keys(url: str, cache: Path) -> list[str]:
    """Every sample key of the MDS dataset at ``url``, read back through Streaming."""
    from streaming import StreamingDataset

    from pipeline.shared_memory import clean_leaked_shared_memory

    clean_leaked_shared_memory()
    dataset = StreamingDataset(remote=url, local=str(cache), shuffle=False, batch_size=1)
    return [dataset[i]["key"] for i in range(len(dataset))]


def test_parts_from_bucket_videos_into_bucket_then_remote_merge(s3, synth_dir, ground_truth,
                                                                  tmp_path, capsys):
    bucket = s3.new_bucket()
    manifest, ids = small_manifest(synth_dir, ground_truth, 5, tmp_path / "m.csv")
    upload_videos(s3, bucket, synth_dir, manifest)
    gone = f"videos/{_page_dir(manifest, ids[1])}/{ids[1]}.mp4"
    s3.client().delete_object(Bucket=bucket, Key=gone)
    s3.client().upload_file(str(manifest), bucket, "lists/m.csv")
    parts = [f"s3://{bucket}/parts/part-{i}" for i in range(2)]
    for i, part in enumerate(parts):
        code = vtp_main(["shard", f"s3://{bucket}/lists/m.csv", "--video-root",
                         f"s3://{bucket}/videos", "--out", part, "--num-workers", "2",
                         "--worker-index", str(i), "--shard-size", "2",
                         "--stage", str(tmp_path / "stage"), *SMALL])
        assert code == 0
    stored = s3.keys(bucket, "parts/part-0/")
    for name in ("settings.json", "summary.json", "manifest.parquet", "mds/index.json",
                 "done/p000-00000.json", "mds/p000-00000/shard.00000.mds"):
        assert f"parts/part-0/{name}" in stored, stored
    staged = [p for p in (tmp_path / "stage").rglob("*.mds")]
    assert not staged, f"uploaded video bytes were kept in the stage: {staged}"
    rows = remote_rows(s3, parts[0]) + remote_rows(s3, parts[1])
    assert sorted(r["key"] for r in rows) == sorted(ids)
    failed = {r["key"]: r["reason"] for r in rows if r["status"] != "ok"}
    assert failed == {ids[1]: f"missing object: s3://{bucket}/videos/"
                              f"{_page_dir(manifest, ids[1])}/{ids[1]}.mp4"}

    capsys.readouterr()
    assert vtp_main(["merge", *parts, "--out", f"s3://{bucket}/all"]) == 0
    summary = json.loads(read_remote(s3, f"s3://{bucket}/all", "summary.json"))
    assert (summary["inputs"], summary["ok"], summary["complete"]) == (5, 4, True)
    assert summary["parts"] == parts
    keys = stream_keys(f"s3://{bucket}/all/mds", tmp_path / "cache")
    assert sorted(keys) == sorted(set(ids) - {ids[1]})
    # a second merge into the same prefix is refused, nothing is overwritten
    with pytest.raises(SystemExit) as stop:
        vtp_main(["merge", *parts, "--out", f"s3://{bucket}/all"])
    assert stop.value.code == 2 and "is not empty" in capsys.readouterr().err


def _page_dir(manifest: Path, videoid: str) -> str:
    import pyarrow.csv as pacsv

    rows = pacsv.read_csv(manifest, convert_options=pacsv.ConvertOptions(
        strings_can_be_null=False, column_types={"videoid": "string", "page_dir": "string"}))
    return next(r["page_dir"] for r in rows.to_pylist() if r["videoid"] == videoid)


def test_remote_shard_killed_then_rerun_elsewhere_loses_and_repeats_nothing(
        s3, synth_dir, ground_truth, tmp_path):
    bucket = s3.new_bucket()
    manifest, ids = small_manifest(synth_dir, ground_truth, 6, tmp_path / "m.csv")
    upload_videos(s3, bucket, synth_dir, manifest)
    out = f"s3://{bucket}/out"
    command = [sys.executable, "-m", "commands.cli", "shard", str(manifest), "--video-root",
               f"s3://{bucket}/videos", "--out", out, "--shard-size", "1", "--batch", "1", *SMALL]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    log = (tmp_path / "killed.log").open("w")
    first = subprocess.Popen([*command, "--stage", str(tmp_path / "machine-1")], env=env,
                             stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 120
    while not [k for k in s3.keys(bucket, "out/done/")] and first.poll() is None:
        assert time.monotonic() < deadline, "the run to interrupt never finished a group"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the run and its pool: a node lost mid-run
    first.wait(timeout=30)
    log.close()
    finished_before = len(s3.keys(bucket, "out/done/"))
    assert 1 <= finished_before < 6, (tmp_path / "killed.log").read_text()[-2000:]
    assert "out/summary.json" not in s3.keys(bucket, "out/")

    # another machine: an empty stage, only the bucket knows what was done
    done = subprocess.run([*command, "--stage", str(tmp_path / "machine-2")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(read_remote(s3, out, "summary.json"))
    assert summary["complete"] and summary["resumed_inputs"] >= finished_before
    rows = remote_rows(s3, out)
    assert sorted(r["key"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)
    keys = stream_keys(f"{out}/mds", tmp_path / "cache")
    assert sorted(keys) == sorted(ids), "a sample was lost or written twice"
    groups = {k.split("/")[2] for k in s3.keys(bucket, "out/mds/") if k.count("/") == 3}
    assert groups == {f"p000-{g:05d}" for g in range(6)}, "objects of unfinished groups remain"
