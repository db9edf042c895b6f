"""`vtp doctor`: the machine report, the decode probe, and the verdict on a recipe."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from train_fixtures import train_shards  # noqa: F401  (session fixture)

from commands.cli import main as vtp_main

FAST = ["--probe-seconds", "0.2"]


def _doctor(capsys, *args: str) -> tuple[int, str]:
    code = vtp_main(["doctor", *FAST, *args])
    return code, capsys.readouterr().out


def test_ready_for_the_tiny_recipe_on_vp9_shards(capsys, train_shards, tmp_path):  # noqa: F811
    code, out = _doctor(capsys, "--recipe", "tiny-synthetic", "--set", f"data.path={train_shards}",
                        "--path", str(tmp_path))
    lines = out.strip().splitlines()
    assert code == 0, out
    assert lines[-1] == "READY: this machine can run recipe tiny-synthetic"
    assert lines[0].startswith("versions: python 3.") and "dali 2.4.0" in lines[0]
    assert "ffmpeg" in lines[0] and "composer 0.32.1" in lines[0]
    assert any(line.startswith("  probe cpu vp9: ") and "frames/s" in line for line in lines)
    assert any(line.startswith("  probe cpu mjpeg: ") and "frames/s" in line for line in lines)
    assert f"free under {tmp_path.resolve()}" in out and "/dev/shm" in out
    assert "codec vp9, decoded on cpu" in out


def test_json_report(capsys, train_shards):  # noqa: F811
    code, out = _doctor(capsys, "--json", "--recipe", "tiny-synthetic",
                        "--set", f"data.path={train_shards}")
    report = json.loads(out)
    assert code == 0 and report["ready"] is True and report["reasons"] == []
    assert report["recipe"]["shard_codec"] == "vp9" and report["recipe"]["device"] in ("cpu", "gpu")
    probes = {(p["route"], p["codec"]): p for p in report["decode"]["probes"]}
    assert probes[("cpu", "vp9")]["ok"] and probes[("cpu", "vp9")]["clips_per_s"] > 0
    assert report["threads"]["torch_threads"] >= 1 and report["shm_free_bytes"] > 0
    assert report["versions"]["torch"] == "2.7.0"


def _h264_wds(folder: Path) -> Path:
    """A WebDataset folder whose (fake) first sample says it holds H.264."""
    wds = folder / "wds"
    wds.mkdir(parents=True)
    with tarfile.open(wds / "shard-000000.tar", "w") as tar:
        for name, data in (("k0.mp4", b"\0" * 16),
                           ("k0.json", json.dumps({"codec": "h264", "frames": 8}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (wds / "shard-000000.idx").write_text("v1.2 1\n")
    return folder


def test_not_ready_names_each_reason(capsys, tmp_path):
    shards = _h264_wds(tmp_path / "h264")
    code, out = _doctor(capsys, "--recipe", "tiny-synthetic", "--set", f"data.path={shards}",
                        "--set", "data.format=wds", "--set", "data.device=cpu")
    last = out.strip().splitlines()[-1]
    assert code == 1
    assert last.startswith("NOT READY to run recipe tiny-synthetic: ")
    assert "the shards hold h264 video, which DALI 2.4 cannot decode on device=cpu" in last
    code, out = _doctor(capsys, "--recipe", "tiny-synthetic", "--set", f"data.path={tmp_path}")
    assert code == 1 and "no MDS shards in" in out.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--path", "/no/such/folder"], "--path /no/such/folder is not a folder"),
    (["--recipe", "no-such-recipe"], "recipe no-such-recipe does not exist"),
    (["--recipe", "tiny-synthetic", "--set", "trainer.bogus=1"], "bogus"),
    (["--set", "data.path=x"], "--set needs --recipe"),
])
def test_bad_input_exits_2_with_a_message(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["doctor", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "vtp doctor: error: " in err and message in err and "Traceback" not in err
