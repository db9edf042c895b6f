"""`vtp shard` as an array job: the part comes from Slurm's or Kubernetes' environment."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from train_fixtures import clean_rows

from commands.cli import main as vtp_main
from tools.shard.array import resolve_part
from tools.shard.inputs import InputError

SMALL = ["--format", "mds", "--codec", "vp9", "--short-side", "32", "--max-seconds", "1",
         "--workers", "1", "--no-progress"]


def small_manifest(synth_dir, ground_truth, count, path):
    """A WebVid CSV with the first ``count`` clean training rows of the synthetic dataset."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(synth_dir / "results.csv",
                           convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    ids = clean_rows(ground_truth, count)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table.filter(pc.is_in(pc.cast(table["videoid"], "string"),
                                          value_set=pc.cast(ids, "string"))), path)
    return path, ids


@pytest.mark.parametrize("flags, env, want", [
    ((None, None), {}, (1, 0, "one machine")),
    ((4, 2), {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, (4, 2, "--worker-index")),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"},
     (3, 2, "SLURM_ARRAY_TASK_ID=2 of SLURM_ARRAY_TASK_COUNT=3")),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3",
                    "SLURM_ARRAY_TASK_MIN": "1"}, (3, 2, "SLURM_ARRAY_TASK_ID=3")),
    ((3, None), {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, (3, 0, "SLURM")),
    ((5, None), {"JOB_COMPLETION_INDEX": "4"},
     (5, 4, "JOB_COMPLETION_INDEX=4 with --num-workers 5")),
])
def test_part_from_flags_slurm_or_indexed_job(flags, env, want):
    part = resolve_part(*flags, env)
    assert (part.count, part.index) == want[:2]
    assert want[2] in part.source


@pytest.mark.parametrize("flags, env, message", [
    ((None, None), {"JOB_COMPLETION_INDEX": "1"}, "give --num-workers"),
    ((2, None), {"JOB_COMPLETION_INDEX": "2"}, "not below --num-workers 2"),
    ((4, None), {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "disagrees"),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"}, "contiguous"),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ((None, None), {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, "not an integer"),
    ((3, None), {}, "without --worker-index"),
])
def test_unclear_part_is_a_usage_error(flags, env, message):
    with pytest.raises(InputError, match=message):
        resolve_part(*flags, env)


def test_slurm_array_tasks_shard_disjoint_parts_that_merge(synth_dir, ground_truth, tmp_path,
                                                           monkeypatch, capsys):
    manifest, ids = small_manifest(synth_dir, ground_truth, 4, tmp_path / "m.csv")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    parts = []
    for task in ("0", "1"):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        parts.append(tmp_path / f"part-{task}")
        assert vtp_main(["shard", str(manifest), "--video-root", str(synth_dir / "videos"),
                         "--out", str(parts[-1]), *SMALL]) == 0
        assert f"part {task} of 2 (SLURM_ARRAY_TASK_ID={task} of SLURM_ARRAY_TASK_COUNT=2)" in (
            capsys.readouterr().err)
    keys = [set(pq.read_table(p / "manifest.parquet")["key"].to_pylist()) for p in parts]
    assert not keys[0] & keys[1] and keys[0] | keys[1] == set(ids)
    assert vtp_main(["merge", *map(str, parts), "--out", str(tmp_path / "all")]) == 0
    assert set(pq.read_table(tmp_path / "all" / "manifest.parquet")["key"].to_pylist()) == set(ids)


def test_indexed_job_without_num_workers_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    (tmp_path / "m.csv").write_text("videoid,page_dir,name\n")
    with pytest.raises(SystemExit) as stop:
        vtp_main(["shard", str(tmp_path / "m.csv"), "--video-root", str(tmp_path),
                  "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    assert "give --num-workers equal to the Job's completions" in capsys.readouterr().err
