"""The deploy/ scripts run as a scheduler would run them, against the loopback bucket.

The Slurm array is two tasks of shard-webvid.sbatch run with the environment Slurm gives each
task, then merge-webvid.sbatch; the Kubernetes Indexed Job is its container command run with
the environment the Job gives each pod. `vtp` is this checkout (a shim on PATH).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_shard_array import small_manifest
from test_shard_remote import read_remote, remote_rows

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"


def _env(tmp: Path, s3, **extra: str) -> dict[str, str]:
    shim = tmp / "bin" / "vtp"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m commands.cli "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, **s3.env, "PATH": f"{shim.parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), **extra}


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_slurm_array_then_merge_scripts(s3, synth_dir, ground_truth, tmp_path):
    bucket = s3.new_bucket()
    manifest, ids = small_manifest(synth_dir, ground_truth, 3, tmp_path / "m.csv")
    base = f"s3://{bucket}/webvid"
    common = {"BUCKET": base, "MANIFEST": str(manifest), "VIDEO_ROOT": str(synth_dir / "videos"),
              "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_CPUS_PER_TASK": "1"}
    for task in ("0", "1"):
        env = _env(tmp_path, s3, **common, SLURM_ARRAY_TASK_ID=task)
        log = _run(["bash", str(DEPLOY / "slurm" / "shard-webvid.sbatch")], env)
        assert f"part {task} of 2 (SLURM_ARRAY_TASK_ID={task}" in log
    _run(["bash", str(DEPLOY / "slurm" / "merge-webvid.sbatch")],
         _env(tmp_path, s3, BUCKET=base, PARTS="2"))
    merged = f"{base}/shards-10pct/all"
    assert sorted(r["key"] for r in remote_rows(s3, merged)) == sorted(ids)
    summary = json.loads(read_remote(s3, merged, "summary.json"))
    assert summary["complete"] and summary["ok"] == 3
    settings = json.loads(read_remote(s3, merged, "settings.json"))
    assert settings["transcode"]["codec"] == "h264" and settings["transcode"]["short_side"] == 256


def test_kubernetes_indexed_job_command(s3, synth_dir, ground_truth, tmp_path):
    job = yaml.safe_load((DEPLOY / "k8s" / "shard-webvid-indexed-job.yaml").read_text())
    merge = yaml.safe_load((DEPLOY / "k8s" / "merge-job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    container = spec["template"]["spec"]["containers"][0]
    assert f"--num-workers {spec['completions']}" in container["args"][0]
    bucket = s3.new_bucket()
    manifest, ids = small_manifest(synth_dir, ground_truth, 2, tmp_path / "m.csv")
    s3.client().upload_file(str(manifest), bucket, "lists/m.csv")
    for videoid, page_dir in _rows(manifest):
        rel = f"{page_dir}/{videoid}.mp4"
        s3.client().upload_file(str(synth_dir / "videos" / rel), bucket, f"webvid/videos/{rel}")
    # a 2-pod version of the Job: the same command, completions 2
    command = container["args"][0].replace(f"--num-workers {spec['completions']}",
                                           "--num-workers 2")
    command = command.replace("--workers 16", "--workers 1")
    env = {"BUCKET": f"s3://{bucket}/webvid", "MANIFEST": f"s3://{bucket}/lists/m.csv",
           "STAGE": str(tmp_path / "stage")}
    for index in ("0", "1"):
        log = _run(["sh", "-c", command], _env(tmp_path, s3, **env, JOB_COMPLETION_INDEX=index))
        assert f"JOB_COMPLETION_INDEX={index} with --num-workers 2" in log
    merge_command = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
    _run(["bash", "-c", merge_command], _env(tmp_path, s3, BUCKET=env["BUCKET"], PARTS="2"))
    rows = remote_rows(s3, f"s3://{bucket}/webvid/shards-10pct/all")
    assert sorted(r["key"] for r in rows) == sorted(ids) and all(r["status"] == "ok" for r in rows)


def _rows(manifest: Path) -> list[tuple[str, str]]:
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(manifest, convert_options=pacsv.ConvertOptions(
        column_types={"videoid": "string", "page_dir": "string"}))
    return list(zip(table["videoid"].to_pylist(), table["page_dir"].to_pylist(), strict=True))
