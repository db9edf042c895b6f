"""The data tools (synth, clean, subset, shard, merge) against bad input: exit status 2, a
message that names the culprit, no traceback, and nothing of the user's lost or changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from commands.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user(tmp_path) -> Path:
    """An unrelated, non-empty folder of someone's files (named like ours, some of them)."""
    folder = tmp_path / "user"
    (folder / "tmp").mkdir(parents=True)
    (folder / "tmp" / "draft.txt").write_text("keep me")
    (folder / "manifest.parquet").write_bytes(b"my own parquet")
    (folder / "summary.json").write_text('{"mine": true}')
    (folder / "notes.md").write_text("notes")
    return folder


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    captions = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"videoid": ["1", "2"], "caption": ["a dog runs", "a cat sits"],
                             "page_dir": ["p", "p"], "drop_reason": [None, None]}), captions)
    header = tmp_path / "header.csv"
    header.write_text("videoid,page_dir,name\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "folder.csv").mkdir()
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 but not really")
    return {"file": a_file, "captions": captions, "header": header, "videos": tmp_path / "videos",
            "dir_csv": tmp_path / "folder.csv", "garbage": garbage, "tmp": tmp_path}


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    return err


def test_synth_bad_inputs(files, user, capsys, tmp_path):
    err = _usage_error(["synth", files["file"], "--num-clips", "2"], capsys)
    assert f"OUT_DIR {files['file']} is a file" in err
    for flag, value, words in [("--fps", "0", "fps"), ("--width", "0", "width and height"),
                               ("--num-test", "-1", "num_test"), ("--workers", "0", "workers"),
                               ("--num-clips", "0", "num_clips"),
                               ("--defect-rate", "2", "defect_rate")]:
        err = _usage_error(["synth", tmp_path / "s", "--num-clips", "2", flag, value], capsys)
        assert words in err, (flag, err)
    assert not (tmp_path / "s").exists()


def test_clean_bad_inputs(files, capsys, tmp_path):
    out = tmp_path / "c"
    assert "no such file" in _usage_error(["clean", tmp_path / "absent.csv", "--out", out], capsys)
    assert "is not a file" in _usage_error(["clean", files["dir_csv"], "--out", out], capsys)
    assert "cannot read" in _usage_error(["clean", files["garbage"], "--out", out], capsys)
    err = _usage_error(["clean", files["header"], "--out", files["file"], "--workers", "1"], capsys)
    assert f"--out {files['file']} is a file" in err
    err = _usage_error(["clean", files["header"], "--out", out, "--caption-column", "nope"], capsys)
    assert "'nope'" in err
    for flag, value in [("--min-words", "0"), ("--workers", "0"), ("--chunk-rows", "0"),
                        ("--lang-threshold", "nan")]:
        assert flag.strip("-").split("-")[0] in _usage_error(
            ["clean", files["header"], "--out", out, flag, value], capsys).replace("_", "-")
    assert files["file"].read_text() == "x"


def test_clean_into_an_unrelated_folder_keeps_its_files(files, user, capsys):
    before = _snapshot(user)
    assert main(["clean", str(files["header"]), "--out", str(user), "--workers", "1"]) == 0
    after = _snapshot(user)
    assert {k: after[k] for k in before} == before
    assert "captions.parquet" in after


def test_subset_bad_inputs_and_an_empty_subset_prints_json(files, user, capsys, tmp_path):
    err = _usage_error(["subset", files["captions"], "--out", files["file"]], capsys)
    assert f"--out {files['file']} is a file" in err
    assert "--fractions" in _usage_error(["subset", files["captions"], "--out", tmp_path / "s",
                                          "--fractions", "0,2"], capsys)
    assert "'caption'" in _usage_error(["subset", files["header"], "--out", tmp_path / "s"], capsys)
    before = _snapshot(user)
    # 1e-9 of two rows is empty: its KS statistics do not exist, and must print as null.
    assert main(["subset", str(files["captions"]), "--out", str(user), "--fractions", "1e-9"]) == 0
    summary = json.loads(capsys.readouterr().out)  # NaN is not JSON: this would fail on it
    assert summary["subsets"][0]["rows"] == 0 and summary["subsets"][0]["duration_ks"] is None
    after = _snapshot(user)
    assert {k: after[k] for k in before} == before


SHARD_CASES = [
    (["--timeout", "0"], "timeout must be > 0"),
    (["--timeout", "nan"], "timeout=nan: must be a finite number"),
    (["--crf", "99"], "crf for h264 must be in [0, 51]"),
    (["--crf", "20", "--codec", "mjpeg"], "crf applies to"),
    (["--preset", "warp"], "preset must be one of"),
    (["--workers", "0"], "must be >= 1"),
    (["--worker-index", "2", "--num-workers", "2"], "worker_index must be in [0, 2)"),
    (["--start", "-1"], "start >= 0"),
    (["--short-side", "3"], "short_side must be an even number"),
    (["--fps", "inf"], "fps=inf: must be a finite number"),
]


@pytest.mark.parametrize("flags,words", SHARD_CASES, ids=[c[0][0] for c in SHARD_CASES])
def test_shard_bad_options_are_refused_up_front(files, capsys, tmp_path, flags, words):
    err = _usage_error(["shard", files["header"], "--video-root", files["videos"], "--out",
                        tmp_path / "o", *flags], capsys)
    assert words in err
    assert not (tmp_path / "o").exists()


def test_shard_bad_inputs(files, capsys, tmp_path):
    out, videos = tmp_path / "o", files["videos"]
    assert "either MANIFEST" in _usage_error(["shard", "--out", out], capsys)
    assert "--video-root must be an existing folder" in _usage_error(
        ["shard", files["header"], "--video-root", tmp_path / "absent", "--out", out], capsys)
    assert "does not exist" in _usage_error(
        ["shard", tmp_path / "absent.csv", "--video-root", videos, "--out", out], capsys)
    assert "cannot read manifest" in _usage_error(
        ["shard", files["garbage"], "--video-root", videos, "--out", out], capsys)
    assert "no .tar files" in _usage_error(["shard", "--v2d-tars", videos, "--out", out], capsys)
    err = _usage_error(["shard", files["header"], "--video-root", videos, "--out", files["file"]],
                       capsys)
    assert f"--out {files['file']} is a file" in err
    assert files["file"].read_text() == "x"


def test_shard_refuses_an_unrelated_folder_and_touches_nothing_in_it(files, user, capsys):
    before = _snapshot(user)
    err = _usage_error(["shard", files["header"], "--video-root", files["videos"], "--out", user],
                       capsys)
    assert f"--out {user} is a non-empty folder that is not a `vtp shard` output" in err
    assert _snapshot(user) == before and sorted(p.name for p in user.iterdir()) == \
        ["manifest.parquet", "notes.md", "summary.json", "tmp"]


def test_shard_scratch_files_live_under_a_name_of_ours(files, tmp_path):
    from tools.shard.folder import SCRATCH, prepare_out, scratch_folder

    out = tmp_path / "run"
    prepare_out(out)
    assert scratch_folder(out) == out / SCRATCH and SCRATCH.startswith(".vtp")


def test_merge_bad_inputs(files, user, capsys, tmp_path):
    out = tmp_path / "m"
    assert "is not a folder" in _usage_error(["merge", files["file"], "--out", out], capsys)
    assert "is not a finished `vtp shard` output" in _usage_error(["merge", user, "--out", out],
                                                                  capsys)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "settings.json").write_text("{not json")
    (broken / "summary.json").write_text("{}")
    err = _usage_error(["merge", broken, "--out", out], capsys)
    assert f"{broken} is not a `vtp shard` output" in err
    (broken / "settings.json").write_text("[]")
    assert "lacks the fields" in _usage_error(["merge", broken, "--out", out], capsys)
    err = _usage_error(["merge", broken, "--out", files["file"]], capsys)
    assert f"--out {files['file']} is a file" in err
    assert files["file"].read_text() == "x"


def test_merge_into_an_unrelated_folder_is_refused_untouched(files, user, capsys, tmp_path):
    part = tmp_path / "part"
    assert main(["shard", str(files["header"]), "--video-root", str(files["videos"]), "--out",
                 str(part), "--workers", "1", "--format", "wds", "--no-progress"]) == 0
    capsys.readouterr()
    before = _snapshot(user)
    assert "is not empty" in _usage_error(["merge", part, "--out", user], capsys)
    assert _snapshot(user) == before


@pytest.mark.parametrize("command", ["synth", "clean", "subset", "shard", "merge"])
def test_help_shows_every_default(command):
    from commands.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.default not in (None, False) and action.option_strings \
                and action.help != "==SUPPRESS==" and action.dest != "help":
            assert "default" in (action.help or ""), (command, action.option_strings)


def test_a_usage_error_is_one_line_without_a_traceback(files, tmp_path):
    done = subprocess.run([sys.executable, "-m", "commands.cli", "shard", str(files["header"]),
                           "--video-root", str(files["videos"]), "--out", str(files["file"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("vtp shard: error: --out ")
