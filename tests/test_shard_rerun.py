"""Reruns, retries and a killed parent: `vtp shard` into a finished folder, --retry-failed,
inputs with nothing to shard, and pool workers that must die with the process that made them."""

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

from tools.shard import ShardConfig, TranscodeOptions, load_items, shard

ROOT = Path(__file__).resolve().parents[1]


def _clip(path: Path, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=s=64x48:r=8", "-t", str(seconds), "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", f"file:{path}"], check=True)
    return path


def _manifest(path: Path, keys: list[str], **columns) -> Path:
    table = {"videoid": keys, "page_dir": ["p"] * len(keys), "name": [f"clip {k}" for k in keys],
             **columns}
    if path.suffix == ".csv":
        pacsv.write_csv(pa.table(table), path)
    else:
        pq.write_table(pa.table(table), path)
    return path


def _vtp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _mds_count(mds: Path) -> int:
    return sum(s["samples"] for s in json.loads((mds / "index.json").read_text())["shards"])


def _wds_keys(wds: Path) -> list[str]:
    import webdataset

    tars = sorted(str(p) for p in wds.glob("*.tar"))
    return [s["__key__"] for s in webdataset.WebDataset(tars, shardshuffle=False)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rerun") / "videos"
    for key in ("a", "b", "c"):
        _clip(root / "p" / f"{key}.mp4")
    return root


def test_reruns_into_a_finished_folder_never_crash_and_change_nothing(videos, tmp_path):
    manifest = _manifest(tmp_path / "m.csv", ["a", "b", "c", "missing"])
    command = ["shard", str(manifest), "--video-root", str(videos), "--out", str(tmp_path / "out"),
               "--workers", "1", "--short-side", "48", "--no-progress"]
    first = _vtp(*command)
    assert first.returncode == 0, first.stderr[-2000:]
    # Before the fix about two reruns in three aborted (exit 134) importing torch on two
    # threads: three reruns catch it 26 times in 27. (`vtp shard` was rerun 20 times by hand.)
    for _ in range(3):
        rerun = _vtp(*command)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert (summary["inputs"], summary["ok"], summary["resumed_inputs"]) == (4, 3, 4)
        assert _mds_count(tmp_path / "out" / "mds") == 3
        assert sorted(_wds_keys(tmp_path / "out" / "wds")) == ["a", "b", "c"]


@pytest.mark.parametrize("kind", ["header-only csv", "all-dropped parquet"])
def test_nothing_to_shard_is_a_clean_empty_run(videos, tmp_path, kind):
    if kind == "header-only csv":
        manifest = tmp_path / "m.csv"
        manifest.write_text("videoid,page_dir,name\n")
    else:
        manifest = _manifest(tmp_path / "m.parquet", ["a", "b"], drop_reason=["empty", "too_short"])
    done = _vtp("shard", str(manifest), "--video-root", str(videos), "--out", str(tmp_path / "out"),
                "--workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"] == summary["ok"] == 0 and summary["complete"]
    assert pq.read_table(tmp_path / "out" / "manifest.parquet").num_rows == 0


def _config(out: Path, **kw) -> ShardConfig:
    return ShardConfig(out=out, transcode=TranscodeOptions(short_side=48), workers=1,
                       shard_size=2, batch=2, progress=False, **kw)


def test_retry_failed_redoes_only_failed_rows_and_appends_without_duplicates(videos, tmp_path):
    root = tmp_path / "root"
    for key in ("a", "b"):
        (root / "p").mkdir(parents=True, exist_ok=True)
        (root / "p" / f"{key}.mp4").write_bytes((videos / "p" / f"{key}.mp4").read_bytes())
    (root / "p" / "bad.mp4").write_text("not a video\n")
    manifest = _manifest(tmp_path / "m.csv", ["a", "late", "bad", "b"])
    out = tmp_path / "out"
    first = shard(load_items(manifest, root, None)[0], _config(out))
    assert (first["ok"], first["failed"]) == (2, 2)
    _clip(root / "p" / "late.mp4")  # the missing file arrives
    items = load_items(manifest, root, None)[0]
    again = shard(items, _config(out))
    assert (again["ok"], again["retried_inputs"]) == (2, 0)  # failures are kept without the flag
    retried = shard(items, _config(out, retry_failed=True))
    assert (retried["ok"], retried["failed"], retried["retried_inputs"]) == (3, 1, 2)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["key"] for r in rows] == ["a", "late", "bad", "b"]  # one row per input, in order
    assert rows[1]["status"] == "ok" and rows[1]["shard"].startswith("p000-r001-")
    assert rows[2]["reason"].startswith("text file, not a video")
    assert sorted(_wds_keys(out / "wds")) == ["a", "b", "late"] and _mds_count(out / "mds") == 3
    # A second retry round redoes only what still fails; nothing is added twice.
    twice = shard(items, _config(out, retry_failed=True))
    assert (twice["ok"], twice["failed"], twice["retried_inputs"]) == (3, 1, 1)
    assert sorted(_wds_keys(out / "wds")) == ["a", "b", "late"] and _mds_count(out / "mds") == 3
    assert pq.read_table(out / "manifest.parquet").num_rows == 4
    # A later plain rerun keeps the retried state, and merge takes the retry groups along.
    assert shard(items, _config(out))["ok"] == 3
    from tools.merge import merge

    merged = merge([out], tmp_path / "merged")
    assert (merged["inputs"], merged["ok"]) == (4, 3)
    assert sorted(_wds_keys(tmp_path / "merged" / "wds")) == ["a", "b", "late"]
    assert _mds_count(tmp_path / "merged" / "mds") == 3


def test_every_input_failing_exits_non_zero_with_the_summary(videos, tmp_path):
    from commands.cli import main

    manifest = _manifest(tmp_path / "m.csv", ["gone", "lost"])
    code = main(["shard", str(manifest), "--video-root", str(videos), "--out", str(tmp_path / "o"),
                 "--workers", "1", "--format", "wds", "--no-progress"])
    assert code == 1
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["failure_reasons"] == {"missing file": 2}


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(b")") + 2:].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"


def test_pool_workers_and_the_resource_tracker_die_with_a_killed_parent(tmp_path):
    root = tmp_path / "videos"
    keys = [f"k{i}" for i in range(6)]
    for key in keys:
        _clip(root / "p" / f"{key}.mp4", seconds=8)
    manifest = _manifest(tmp_path / "m.csv", keys)
    proc = subprocess.Popen(
        [sys.executable, "-m", "commands.cli", "shard", str(manifest), "--video-root", str(root),
         "--out", str(tmp_path / "out"), "--workers", "2", "--batch", "1", "--codec", "vp9",
         "--format", "wds", "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # two workers, the resource tracker, an ffmpeg
            children = _descendants(proc.pid)
            if len(children) >= 4:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        assert len(children) >= 3, children
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as the OOM killer would
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in children if _alive(p)], "children outlived their parent"
    finally:
        for pid in children | {proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
