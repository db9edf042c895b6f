"""The `vtp` console script: help, usage errors without tracebacks, and a synth smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VTP = [str(Path(sys.executable).parent / "vtp")]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VTP, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands():
    result = _run("--help")
    assert result.returncode == 0
    assert "synth" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = _run("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr and "Traceback" not in result.stderr


def test_bad_flag_is_a_usage_error(tmp_path):
    result = _run("synth", str(tmp_path), "--num-clips", "many")
    assert result.returncode == 2
    assert "--num-clips" in result.stderr and "Traceback" not in result.stderr


def test_bad_value_is_a_usage_error(tmp_path):
    result = _run("synth", str(tmp_path), "--num-clips", "0")
    assert result.returncode == 2
    assert "num_clips" in result.stderr and "Traceback" not in result.stderr


def test_synth_smoke(tmp_path):
    result = _run("synth", str(tmp_path / "ds"), "--num-clips", "4", "--num-test", "1",
                  "--seed", "5", "--defect-rate", "0")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["train_rows"] == 4 and summary["test_clips"] == 1
    assert len(list((tmp_path / "ds" / "videos").rglob("*.mp4"))) == 5
