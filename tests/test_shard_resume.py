"""Resume after a real `kill -9`, leftovers of unfinished groups, multi-machine parts + merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tools.merge import MergeError, merge
from tools.shard import ShardConfig, TranscodeOptions, load_items, shard
from tools.shard.inputs import WorkItem
from tools.shard.runner import SettingsMismatch, results_in_order
from tools.shard.worker import Result

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = {"short_side": 64, "max_seconds": 2.0}
SHARD_SIZE = 3


def _config(out: Path, **kw) -> ShardConfig:
    return ShardConfig(out=out, transcode=TranscodeOptions(**OPTIONS), workers=2,
                       shard_size=SHARD_SIZE, progress=False, **kw)


@pytest.fixture(scope="module")
def small(synth_dir, tmp_path_factory) -> Path:
    """The first 16 rows of the synthetic CSV (good and broken files)."""
    ids_as_text = pacsv.ConvertOptions(column_types={"videoid": pa.string()})
    table = pacsv.read_csv(synth_dir / "results.csv", convert_options=ids_as_text)
    path = tmp_path_factory.mktemp("resume") / "small.csv"
    pacsv.write_csv(table.slice(0, 16), path)
    return path


@pytest.fixture(scope="module")
def reference(small, synth_dir, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run to compare against."""
    out = tmp_path_factory.mktemp("reference") / "out"
    items, _ = load_items(small, synth_dir / "videos", None)
    return out, shard(items, _config(out))


def _mds_keys(mds: Path) -> list[str]:
    from streaming import StreamingDataset

    from pipeline.shared_memory import clean_leaked_shared_memory

    clean_leaked_shared_memory()
    dataset = StreamingDataset(local=str(mds), shuffle=False, batch_size=1)
    return [dataset[i]["key"] for i in range(len(dataset))]


def _wds_keys(wds: Path) -> list[str]:
    import webdataset as wds_lib

    tars = sorted(str(p) for p in wds.glob("*.tar"))
    return [s["__key__"] for s in wds_lib.WebDataset(tars, shardshuffle=False)]


def _manifest(out: Path) -> list[dict]:
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    return sorted(({k: r[k] for k in ("key", "status", "reason", "frames", "shard")} for r in rows),
                  key=lambda r: r["key"])


def _assert_same_as_reference(out: Path, reference: Path) -> None:
    ok = sorted(r["key"] for r in _manifest(reference) if r["status"] == "ok")
    assert _manifest(out) == _manifest(reference)
    for keys in (_mds_keys(out / "mds"), _wds_keys(out / "wds")):
        assert sorted(keys) == ok  # same keys, none twice, none lost


def _command(small: Path, synth_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "commands.cli", "shard", str(small), "--video-root",
            str(synth_dir / "videos"), "--out", str(out), "--workers", "2", "--shard-size",
            str(SHARD_SIZE), "--short-side", str(OPTIONS["short_side"]), "--max-seconds",
            str(OPTIONS["max_seconds"]), "--batch", "1", "--no-progress"]


def _run_and_kill(command: list[str], out: Path, markers: int, delay: float) -> int:
    """Starts `vtp shard`, waits until ``markers`` groups are done (+ ``delay``), SIGKILLs it.

    The whole process group dies (main process, pool workers and their ffmpeg), as when a
    machine is lost. Returns the markers present after the kill.
    """
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((out / "done").glob("*.json"))) < markers and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(list((out / "done").glob("*.json")))


def test_kill_9_then_rerun_gives_the_same_keys(small, synth_dir, reference, tmp_path):
    out = tmp_path / "out"
    command = _command(small, synth_dir, out)
    groups = reference[1]["groups"]
    first = _run_and_kill(command, out, markers=1, delay=0.0)
    second = _run_and_kill(command, out, markers=first + 1, delay=0.15)  # mid-group
    assert 1 <= first < second < groups, "each kill must leave unfinished groups"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_inputs"] == second * SHARD_SIZE and summary["complete"]
    _assert_same_as_reference(out, reference[0])


def test_leftovers_of_an_unfinished_group_are_redone(small, synth_dir, reference, tmp_path):
    out = tmp_path / "out"
    items, _ = load_items(small, synth_dir / "videos", None)
    shard(items, _config(out))
    # What a kill between the renames and the marker leaves: files, but no marker.
    (out / "done" / "p000-00001.json").unlink()
    (out / "wds" / "p000-00001.tar").write_bytes(b"half a tar")
    (out / "mds" / ".tmp-p000-00002").mkdir()
    summary = shard(items, _config(out))
    assert summary["resumed_inputs"] == len(items) - SHARD_SIZE
    assert not (out / "mds" / ".tmp-p000-00002").exists()
    _assert_same_as_reference(out, reference[0])


def test_rerun_with_other_settings_is_refused(small, synth_dir, reference):
    items, _ = load_items(small, synth_dir / "videos", None)
    config = ShardConfig(out=reference[0], transcode=TranscodeOptions(codec="mjpeg"), workers=1,
                         shard_size=SHARD_SIZE, progress=False)
    with pytest.raises(SettingsMismatch, match="transcode"):
        shard(items, config)


@pytest.fixture(scope="module")
def parts(small, synth_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("parts")
    items, _ = load_items(small, synth_dir / "videos", None)
    outs = [root / f"part{i}" for i in range(2)]
    for i, out in enumerate(outs):
        shard(items, _config(out, num_workers=2, worker_index=i))
    return outs


def test_parts_partition_the_input_and_merge_joins_them(parts, reference, tmp_path):
    keys = [{r["key"] for r in _manifest(p)} for p in parts]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    from commands.cli import main

    assert main(["merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 0
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert summary["complete"] and summary["inputs"] == reference[1]["inputs"]
    assert summary["ok"] == reference[1]["ok"]
    merged = tmp_path / "merged"
    ok = sorted(r["key"] for r in _manifest(reference[0]) if r["status"] == "ok")
    assert sorted(_mds_keys(merged / "mds")) == ok
    assert sorted(_wds_keys(merged / "wds")) == ok
    assert all(p.with_suffix(".idx").exists() for p in (merged / "wds").glob("*.tar"))


def test_merge_refuses_missing_duplicate_or_unfinished_parts(parts, tmp_path):
    with pytest.raises(MergeError, match="missing: \\[1\\]"):
        merge(parts[:1], tmp_path / "a")
    with pytest.raises(MergeError, match="given twice: \\[0\\]"):
        merge([parts[0], parts[0], parts[1]], tmp_path / "b")
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(parts[1]), str(broken)], check=True)
    marker = sorted((broken / "done").glob("*.json"))[0]
    marker.unlink()
    with pytest.raises(MergeError, match="incomplete"):
        merge([parts[0], broken], tmp_path / "c")


def test_merge_refuses_a_key_in_two_parts(parts, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(parts[1]), str(copy)], check=True)
    table = pq.read_table(parts[0] / "manifest.parquet")
    pq.write_table(pa.concat_tables([pq.read_table(copy / "manifest.parquet"), table.slice(0, 1)]),
                   copy / "manifest.parquet")
    with pytest.raises(MergeError, match="more than once"):
        merge([parts[0], copy], tmp_path / "d")


def _segfault_on_bad(batch: list[WorkItem]) -> list[Result]:
    """A stand-in for a decoder that crashes on one input (module level: spawned workers
    import it)."""
    if any(item.key == "bad" for item in batch):
        os.kill(os.getpid(), signal.SIGSEGV)
    return [Result(item.key, item.caption, item.source, "ok") for item in batch]


def test_a_crashing_worker_fails_only_its_sample():
    keys = ["a", "b", "bad", "c", "d", "e", "f"]
    items = [WorkItem(key=k, caption=k, source=k) for k in keys]
    results = list(results_in_order(items, _segfault_on_bad, workers=2, batch=3))
    assert [r.key for r in results] == keys
    assert [r.status for r in results] == ["failed" if k == "bad" else "ok" for k in keys]
    assert results[2].reason.startswith("worker crashed")
