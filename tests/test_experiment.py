"""`vtp experiment`: grid expansion and dedup, the table and verdicts from fake results,
resume (finished runs are skipped, failed ones retried), and one real run through the stack."""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
from train_fixtures import train_shards  # noqa: F401  (session fixture)

from commands.experiment import runner as runner_module
from commands.experiment.data import DataPaths
from commands.experiment.document import render
from commands.experiment.grid import (
    GridConfig,
    Run,
    Setting,
    expand,
    grid_around_recipe,
)
from commands.experiment.main import write_report
from commands.experiment.report import aggregate, chance, claims, results_table
from commands.experiment.runner import (
    RunnerConfig,
    execute,
    fingerprints,
    load_results,
    overrides,
    pending,
    result_path,
)

BASELINE = Setting(fraction=1.0, video_mask_ratio=0.75, text_mask_ratio=0.45, losses="+VTC+VTM")


def test_grid_shares_the_baseline_and_changes_one_factor_per_cell():
    cells, runs = expand(GridConfig(baseline=BASELINE, seeds=(0, 1)))
    assert len(cells) == 18
    assert [c.setting == BASELINE for c in cells].count(True) == 6  # one per axis
    assert all(c.baseline == (c.setting == BASELINE) for c in cells)
    # 1 baseline + 2 other values on both data axes, the text mask's and the losses', 3 on
    # the video mask's, 1 other dataset = 13 settings
    assert len(runs) == 26 and len({r.run_id for r in runs}) == 26
    assert sum(r.setting == BASELINE for r in runs) == 2
    names = [f.name for f in fields(Setting) if f.name != "equal_epochs"]  # goes with fraction
    for cell in cells:
        changed = [n for n in names if getattr(cell.setting, n) != getattr(BASELINE, n)]
        assert len(changed) == (0 if cell.baseline else 1), (cell, changed)
        assert cell.setting.equal_epochs == (cell.axis == "data_epochs" and not cell.baseline)
    seeds = {c.label: c.setting.data_seed for c in cells if c.axis == "data_seed"}
    assert seeds == {"dataset seed 0": 0, "dataset seed 1": 1}


def test_defaults_are_three_seeds_on_the_demo_preset():
    from commands.experiment.config import ExperimentConfig
    from commands.experiment.data import DataPlan

    assert ExperimentConfig().seeds == (0, 1, 2)
    assert GridConfig(baseline=BASELINE).seeds == (0, 1, 2)
    assert GridConfig(baseline=BASELINE).video_mask_ratios == (0.5, 0.75, 0.9, 0.95)
    assert ExperimentConfig().preset == "demo"
    assert DataPlan(preset="hard").demo_config().preset == "hard"
    with pytest.raises(ValueError, match="preset"):
        ExperimentConfig(preset="nope")


def test_the_baseline_is_the_recipe_and_its_values_join_the_axes():
    grid = grid_around_recipe(0.5, 0.45, seeds=(0, 1))
    assert grid.baseline == Setting(1.0, 0.5, 0.45, "+VTC+VTM")
    assert grid.video_mask_ratios == (0.5, 0.75, 0.9, 0.95)
    assert grid.text_mask_ratios == (0.15, 0.45, 0.75)  # already on the axis: not repeated
    cells, runs = expand(grid)
    assert len(cells) == 18 and len(runs) == 2 * 13
    assert grid_around_recipe(0.5, 0.45, data_seed=4).data_seeds == (4, 5)
    with pytest.raises(ValueError, match="not among the video_mask axis"):
        GridConfig(baseline=Setting(1.0, 0.8, 0.45))
    cells, runs = expand(GridConfig(baseline=BASELINE, seeds=(3,), axes=("losses",)))
    assert [c.label for c in cells] == ["MVM+MLM", "+VTC", "+VTC+VTM"] and len(runs) == 3


def _result(run: Run, r1: float, n: int = 100) -> dict:
    return {"fraction": run.setting.fraction, "seed": run.seed, "train_clips": 500,
            "train_seconds": 10.0, "eval_seconds": 2.0,
            "metrics": {"t2v_r1": r1, "t2v_r5": min(100.0, 3 * r1), "v2t_r1": r1 / 2, "n": n,
                        "t2v_meanr": (n + 1) / 2 - r1, "chance_r1": 100.0 / n}}


# t2v R@1 per (axis value), seed 0 and seed 1: 0.9 clearly best on video, 0.15 clearly best
# on text (against the paper), data 10% at 60% of full above chance, losses all clearly up.
FAKE = {
    Setting(0.1, 0.75, 0.45): (7.0, 7.0), Setting(0.3, 0.75, 0.45): (9.0, 9.0),
    BASELINE: (10.0, 12.0), Setting(1.0, 0.5, 0.45): (8.0, 8.0),
    Setting(1.0, 0.9, 0.45): (20.0, 21.0),
    Setting(1.0, 0.95, 0.45): (11.0, 13.0), Setting(1.0, 0.75, 0.15): (30.0, 30.0),
    Setting(1.0, 0.75, 0.75): (4.0, 4.0), Setting(1.0, 0.75, 0.45, "MVM+MLM"): (1.0, 1.0),
    Setting(1.0, 0.75, 0.45, "+VTC"): (5.0, 5.0),
    Setting(0.1, 0.75, 0.45, equal_epochs=True): (3.0, 3.0),
    Setting(0.3, 0.75, 0.45, equal_epochs=True): (6.0, 6.0),
    Setting(1.0, 0.75, 0.45, data_seed=1): (10.5, 11.5),
}


def _fake_results(runs: list[Run], skip: set[str] = frozenset()) -> dict[str, dict]:
    return {r.run_id: _result(r, FAKE[r.setting][r.seed]) for r in runs if r.run_id not in skip}


def test_table_and_verdicts_from_fake_results(tmp_path):
    grid = GridConfig(baseline=BASELINE, seeds=(0, 1))
    cells, runs = expand(grid)
    missing = Run(Setting(1.0, 0.95, 0.45), 1).run_id
    results = _fake_results(runs, skip={missing})
    rows = aggregate(cells, grid.seeds, results)
    base = next(r for r in rows if r.cell.baseline)
    assert base.stats["t2v_r1"].mean == 11.0 and math.isclose(base.stats["t2v_r1"].sd, math.sqrt(2))
    assert base.stats["v2t_r1"].mean == 5.5
    c1, c5, n = chance(results)
    assert (c1, c5, n) == (1.0, 5.0, 100)
    table = results_table(rows, c1, c5)
    assert "| chance | - | 1.00 | 5.00 | 1.00 | 50.5 |" in table
    assert "| 11.0 ± 1.4 |" in table and "0.75 (baseline)" in table
    assert "11.0 (1 seed)" in table  # the 0.95 cell lost its second seed: shown, not zeroed
    found = {c.split(",")[0].split(":")[0]: by for c, by in claims(rows, c1)}
    for metric in ("t2v_r1", "t2v_meanr"):  # the fake mean rank moves with R@1
        verdicts = {claim: by[metric][0] for claim, by in found.items()}
        assert verdicts["A high video mask ratio"] == "holds"
        assert verdicts["A high text mask ratio"] == "does not hold"
        # (7 - 1) / (11 - 1) = 60% of the full-data gain over chance, below the paper's 82%
        assert verdicts["Data efficiency"] == "does not hold"
        assert verdicts["Every loss term helps"] == "holds"
    assert "10% keeps 60% of the full-data gain" in found["Data efficiency"]["t2v_r1"][1]
    # the fake mean rank is chance (50.5) minus R@1: a gain of 7 against 11, 64%
    assert "10% keeps 64% of the full-data gain" in found["Data efficiency"]["t2v_meanr"][1]
    # at equal epochs 10% keeps (3 - 1) / (11 - 1) = 20%, and all the data is clearly better
    epochs = found["Data efficiency at equal epochs"]["t2v_r1"]
    assert epochs[0] == "does not hold" and "10% keeps 20% of the full-data gain" in epochs[1]
    setup = {"out": "o", "recipe": "r", "recipe_sha": "abc", "model": "m", "max_duration": "9ba",
             "batch_size": 16,
             "seeds": [0, 1], "baseline": vars(BASELINE), "recipe_video_mask": 0.75,
             "recipe_text_mask": 0.5, "num_clips": 600, "test_clips": 100, "codec": "vp9",
             "short_side": 48, "render": "160x120", "train_clips": "100%: 500", "runs_done": 17,
             "runs_total": 18,
             "run_seconds": 204.0, "seconds_per_run": 12.0, "cores": 2, "date": "2026-01-01",
             "visible_cells": "4x4", "default_grid": True}
    doc = render(rows, c1, c5, setup, ["data.png"], "vtp experiment")
    assert "Regenerate with `vtp experiment`" in doc and "On t2v R@1: 2 of 5 claims hold" in doc
    assert "`make experiments` runs the same grid" in doc and "Run length" not in doc
    # another grid than `make experiments`', shorter than the recipe, on an axis without claims
    seed_axis = [r for r in rows if r.cell.axis == "data_seed"]
    other = render(seed_axis, c1, c5,
                   {**setup, "recipe_max_duration": "90ba", "default_grid": False}, [],
                   "vtp experiment --axes data_seed --publish b")
    assert "`make experiments`" not in other and "0 of 0" not in other
    assert "No claim is tested on these axes" in other
    assert "- Run length: the runs stop at 9ba, the recipe trains 90ba" in other
    assert "Data variance: the baseline on a second synthetic dataset" in doc
    # baseline 11 +- 1.4: a 20% change (2.2 points) is below the ~2.8 that unmatched seeds
    # need, above the 1.0-2.0 of the per-seed differences (0.95 lost a seed: no pair to go by)
    assert "spreads by sd 1.4 over 2 seeds (10.0, 12.0)" in doc and "about 2.8 points" in doc
    assert "margins against the baseline are 1.0-2.0 points" in doc
    assert "2.2 points: **outside** the noise for 11 of 11 settings" in doc
    assert ("t2v R@1 dataset seed 0: 11.0 ± 1.4; dataset seed 1: 11.0 ± 0.7 (within seed noise)"
            in doc)
    path = write_report(tmp_path, cells, grid, results, setup, "img/", "vtp experiment")
    assert "![img/data.png](img/data.png)" in path.read_text()
    for axis in ("data", "data_epochs", "video_mask", "text_mask", "losses", "data_seed"):
        assert (tmp_path / f"{axis}.png").stat().st_size > 5000
    assert len(json.loads((tmp_path / "results.json").read_text())["runs"]) == 25


def test_settings_are_compared_seed_by_seed():
    from commands.experiment.report import Stat, compare

    # each seed moves both settings alike: b is above a by 0.5 in every seed, which the
    # per-seed differences show and the settings' spreads (2.0 each) would hide
    a, b = Stat([10.0, 12.0, 8.0], [0, 1, 2]), Stat([10.5, 12.5, 8.5], [0, 1, 2])
    assert compare(b, a) == "higher" and compare(a, b) == "lower"
    assert compare(Stat(b.values), Stat(a.values)) == "tie"  # unmatched: the spreads count
    # seeds that do not move the settings alike: the per-seed differences spread as much
    c = Stat([10.5, 8.5, 12.5], [0, 1, 2])
    assert compare(c, a) == "tie"
    # one seed in common: no pair to go by, so the spreads count
    assert compare(Stat([10.5, 12.5], [0, 5]), Stat([10.0, 12.0], [0, 6])) == "tie"


def test_a_tie_counts_against_a_mask_claim_only_where_the_grid_resolves_20_percent():
    from commands.experiment.report import Stat, _best_claim

    def verdict(values: dict[str, list[float]]) -> str:
        raw = {k: Stat(v) for k, v in values.items()}
        return _best_claim(raw, raw, "0.9", "t2v R@1")[0]

    # 0.9 ties 0.5 with a noise margin of 0.4 + 0.4, below 20% of 10 (2.0): the advantage the
    # claim needs would have shown, so it does not hold
    assert verdict({"0.5": [10.4, 10.0, 9.6], "0.9": [10.4, 10.0, 9.6]}) == "does not hold"
    # the same means with a margin of 2 + 2: too wide to tell
    assert verdict({"0.5": [12.0, 10.0, 8.0], "0.9": [12.0, 10.0, 8.0]}) == "inconclusive"
    # a resolved tie with 0.75 is enough, whatever the noise against 0.5
    assert verdict({"0.5": [12.0, 10.0, 8.0], "0.75": [10.4, 10.0, 9.6],
                    "0.9": [10.4, 10.0, 9.6]}) == "does not hold"
    # one seed has no spread: never read as a verdict
    assert verdict({"0.5": [10.0], "0.9": [10.0]}) == "inconclusive"
    assert verdict({"0.5": [5.2, 5.0, 4.8], "0.9": [10.2, 10.0, 9.8]}) == "holds"
    assert verdict({"0.5": [15.2, 15.0, 14.8], "0.9": [10.2, 10.0, 9.8]}) == "does not hold"


def _paths(tmp_path: Path, data_seed: int = 0) -> dict[int, DataPaths]:
    """Datasets as `execute` takes them: data seed -> shard folders (``d{seed}-f{share}``)."""
    folder = lambda f: tmp_path / f"d{data_seed}-f{f:g}"  # noqa: E731
    return {data_seed: DataPaths(train={f: folder(f) for f in (0.1, 0.3, 1.0)},
                                 test=tmp_path / "test", train_clips={0.1: 50, 0.3: 150, 1.0: 500},
                                 test_clips=100)}


def _write_result(spec: dict) -> None:
    """What a worker leaves when its run finished."""
    result = {"run_id": spec["run_id"], "fingerprint": spec["fingerprint"],
              "metrics": {"t2v_r1": 1, "t2v_r5": 5, "v2t_r1": 1, "chance_r1": 1, "n": 100}}
    Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
    Path(spec["result"]).write_text(json.dumps(result))


def test_resume_runs_only_unfinished_runs_and_retries_failures(tmp_path, monkeypatch):
    cells, runs = expand(GridConfig(baseline=BASELINE, seeds=(0, 1),
                                    video_mask_ratios=(0.75, 0.9, 0.95),
                                    axes=("data", "video_mask", "text_mask", "losses")))  # 18 runs
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path / "out", work=tmp_path / "work",
                       max_duration="3ba", batch_size=16)
    prints = fingerprints(runs, _paths(tmp_path), cfg)
    done = runs[:5]
    for run in done:
        result_path(cfg.out, run).parent.mkdir(parents=True, exist_ok=True)
        result_path(cfg.out, run).write_text(json.dumps({**_result(run, 5.0),
                                                         "fingerprint": prints[run.run_id]}))
    broken = runs[7].run_id
    called: list[str] = []

    def fake_worker(spec_path, log, tick, stop, started=None):
        spec = json.loads(Path(spec_path).read_text())
        called.append(spec["run_id"])
        log.write("worker log line\n")
        if spec["run_id"] == broken:
            return 1
        _write_result(spec)
        return 0

    monkeypatch.setattr(runner_module, "run_worker", fake_worker)
    summary = execute(runs, _paths(tmp_path), cfg, progress=False)
    assert called == [r.run_id for r in runs[5:]]
    assert summary["skipped"] == 5 and summary["failed"] == [broken] and summary["ran"] == 12
    assert [r.run_id for r in pending(runs, cfg.out, prints)] == [broken]
    assert len(load_results(runs, cfg.out, prints)) == 17
    called.clear()
    summary = execute(runs, _paths(tmp_path), cfg, progress=False)
    assert called == [broken] and summary["skipped"] == 17
    # another recipe setting makes every earlier result stale: all of them run again, and a
    # checkpoint left by the old settings is removed first (autoresume would load it)
    old_checkpoint = cfg.work / "runs" / runs[5].run_id / "checkpoints" / "latest-rank0.pt"
    old_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    old_checkpoint.write_text("old weights")
    called.clear()
    cfg.extra_overrides = ("optimizer.lr=5e-4",)
    execute(runs, _paths(tmp_path), cfg, progress=False)
    assert called == [r.run_id for r in runs]
    assert not old_checkpoint.exists()


def test_jobs_train_runs_side_by_side_and_an_error_stops_the_others(tmp_path, monkeypatch):
    runs = [Run(BASELINE, seed) for seed in range(4)]
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path / "out", work=tmp_path / "work",
                       max_duration="3ba", batch_size=16, jobs=2)
    together = threading.Barrier(2, timeout=20)  # broken unless two workers run at once

    def paired_worker(spec_path, log, tick, stop, started=None):
        started()  # as a worker that has trained its first step
        together.wait()
        _write_result(json.loads(Path(spec_path).read_text()))
        return 0

    monkeypatch.setattr(runner_module, "run_worker", paired_worker)
    summary = execute(runs, _paths(tmp_path), cfg, progress=False)
    assert summary["ran"] == 4 and not summary["failed"]
    assert not pending(runs, cfg.out, fingerprints(runs, _paths(tmp_path), cfg))

    stopped, beside = threading.Event(), threading.Event()

    def failing_or_waiting(spec_path, log, tick, stop, started=None):
        started()
        if json.loads(Path(spec_path).read_text())["run"]["seed"] == 0:
            beside.wait(10)  # fail while the next run is training
            raise RuntimeError("runner broke")
        beside.set()
        if stop.wait(20):
            stopped.set()
        return -1

    monkeypatch.setattr(runner_module, "run_worker", failing_or_waiting)
    cfg.out = tmp_path / "out2"
    with pytest.raises(RuntimeError, match="runner broke"):
        execute(runs, _paths(tmp_path), cfg, progress=False)
    assert stopped.is_set()  # the run beside the failure was told to stop, not waited out


def test_a_stopped_worker_is_killed_and_its_run_stays_pending(tmp_path, monkeypatch):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"batch_log": str(tmp_path / "batches.jsonl")}))
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def sleeper(args, **kwargs):
        assert kwargs["env"][runner_module.PARENT_ENV] == str(os.getpid())
        started.append(popen(["sleep", "60"], **{k: v for k, v in kwargs.items() if k != "env"}))
        return started[-1]

    monkeypatch.setattr(runner_module.subprocess, "Popen", sleeper)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with (tmp_path / "log.txt").open("w") as log:
        code = runner_module.run_worker(spec_path, log, lambda step: None, stop, poll=0.1)
    assert code == -1 and started[0].poll() is not None  # killed, not left sleeping


def test_workers_start_one_at_a_time(tmp_path, monkeypatch):
    # Streaming's shared-memory registration races when two processes start together, so a
    # worker's start waits for the one before to train a step (its batch log to grow)
    popen, started = subprocess.Popen, []

    def slow_start(args, **kwargs):
        log = json.loads(Path(args[-1]).read_text())["batch_log"]
        started.append(time.monotonic())
        kwargs.pop("env")
        return popen(["sh", "-c", f"sleep 0.5; echo step >> {log}; sleep 0.3"], **kwargs)

    monkeypatch.setattr(runner_module.subprocess, "Popen", slow_start)
    startup, stop, codes = threading.Lock(), threading.Event(), []
    (tmp_path / "a.jsonl").write_text("a step of the attempt this run resumes\n")

    def one(name: str) -> None:
        spec_path = tmp_path / f"{name}.json"
        spec_path.write_text(json.dumps({"batch_log": str(tmp_path / f"{name}.jsonl")}))
        startup.acquire()
        with (tmp_path / f"{name}.log").open("w") as log:
            codes.append(runner_module.run_worker(spec_path, log, lambda step: None, stop,
                                                  startup.release, poll=0.05))

    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(10)
    assert codes == [0, 0] and len(started) == 2
    assert started[1] - started[0] >= 0.5  # waited for a step, not for the resumed log
    assert not startup.locked()


def test_results_on_other_data_or_other_galleries_are_stale(tmp_path):
    runs = [Run(BASELINE, 0), Run(BASELINE, 1)]
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path, work=tmp_path, max_duration="3ba",
                       batch_size=16, gallery_size=200)
    data = _paths(tmp_path)
    data[0].identity = {"key": {"num_clips": 800, "preset": "demo"}}
    before = fingerprints(runs, data, cfg)
    # the same folders rebuilt with another size: the recipe and paths are unchanged
    data[0].identity = {"key": {"num_clips": 1500, "preset": "demo"}}
    rebuilt = fingerprints(runs, data, cfg)
    cfg.gallery_size = 100
    regrouped = fingerprints(runs, data, cfg)
    for run in runs:
        assert len({before[run.run_id], rebuilt[run.run_id], regrouped[run.run_id]}) == 3


def test_chance_is_a_query_s_chance_within_its_gallery():
    run = Run(BASELINE, 0)
    result = _result(run, 5.0, n=2000)
    result["metrics"]["chance_r1"] = 0.5  # 10 galleries of 200
    assert chance({run.run_id: result}) == (0.5, 2.5, 2000)
    assert chance({}, 200) == (0.5, 2.5, 200)
    other = _result(Run(BASELINE, 1), 5.0, n=2000)  # one gallery of 2000
    with pytest.raises(ValueError, match="different test sets or galleries"):
        chance({run.run_id: result, "other": other})


def test_overrides_set_each_factor_and_small_subsets_are_refused(tmp_path):
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path, work=tmp_path, max_duration="7ba",
                       batch_size=16, vtc_weight=2.0)
    found = overrides(Run(Setting(0.3, 0.9, 0.15, "+VTC"), 4), _paths(tmp_path), cfg)
    assert f"data.path={tmp_path / 'd0-f0.3'}" in found
    for expected in ("seed=4", "trainer.max_duration=7ba", "model.video_mask_ratio=0.9",
                     "model.text_mask_ratio=0.15", "model.vtc_weight=2.0", "model.vtm_weight=0.0"):
        assert expected in found
    small = DataPaths(train={0.1: tmp_path}, test=tmp_path, train_clips={0.1: 12}, test_clips=10)
    with pytest.raises(ValueError, match="12 clips, fewer than one batch of 16"):
        execute([Run(Setting(0.1, 0.75, 0.45), 0)], {0: small}, cfg, progress=False)


def test_equal_epochs_scale_the_steps_and_a_data_seed_picks_its_dataset(tmp_path):
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path, work=tmp_path,
                       max_duration="300ba", batch_size=16)
    data = {**_paths(tmp_path), **_paths(tmp_path, data_seed=1)}
    # 50 of 500 clips are 3 of 31 full batches of 16 (the last partial one is dropped): the
    # same epochs in 300 * 3 / 31 = 29 steps, saved once at the end
    found = overrides(Run(Setting(0.1, 0.75, 0.45, equal_epochs=True), 0), data, cfg)
    assert "trainer.max_duration=29ba" in found and "trainer.save_interval=29ba" in found
    found = overrides(Run(Setting(0.1, 0.75, 0.45), 0), data, cfg)  # equal compute
    assert "trainer.max_duration=300ba" in found
    found = overrides(Run(Setting(1.0, 0.75, 0.45, data_seed=1), 2), data, cfg)
    assert f"data.path={tmp_path / 'd1-f1'}" in found and "trainer.max_duration=300ba" in found
    assert Setting(0.1, 0.75, 0.45, equal_epochs=True, data_seed=1).slug.endswith("-ep-d1")
    cfg.max_duration = "2ep"
    with pytest.raises(ValueError, match="equal-epochs runs scale a duration in batches"):
        overrides(Run(Setting(0.1, 0.75, 0.45, equal_epochs=True), 0), data, cfg)
    from commands.experiment.config import ExperimentConfig

    with pytest.raises(ValueError, match="equal-epochs runs scale"):  # before any data is built
        ExperimentConfig(max_duration="2ep")
    assert ExperimentConfig(max_duration="2ep", axes=("losses",)).max_duration == "2ep"


def test_one_real_run_trains_evaluates_and_records(tmp_path, train_shards, synth_dir):  # noqa: F811
    from evaluation.evaluate import prepare_test_shards

    test, summary = prepare_test_shards(synth_dir / "test.json", tmp_path / "test-shards", "vp9",
                                        48, 2)
    data = {0: DataPaths(train={1.0: train_shards}, test=test, train_clips={1.0: 16},
                         test_clips=summary["ok"])}
    cfg = RunnerConfig(recipe="tiny-synthetic", out=tmp_path / "out", work=tmp_path / "work",
                       max_duration="2ba", batch_size=16)
    run = Run(Setting(1.0, 0.9, 0.75, "+VTC"), 5)
    summary = execute([run], data, cfg, progress=False)
    assert summary["ran"] == 1 and not summary["failed"], summary
    result = json.loads(result_path(cfg.out, run).read_text())
    assert result["steps"] == 2 and result["seed"] == 5 and result["losses"] == "+VTC"
    assert result["metrics"]["n"] == data[0].test_clips > 0
    assert 0.0 <= result["metrics"]["t2v_r1"] <= 100.0
    assert set(result["final_losses"]) >= {"mvm", "mlm", "vtc"}
    assert "vtm" not in result["final_losses"]
    assert result["wall_seconds"] > 0
    assert not (cfg.work / "runs" / run.run_id / "checkpoints").exists()  # evaluated, then removed
    assert "model.video_mask_ratio=0.9" in result["overrides"]
    # a run cut off during its evaluation: the final checkpoint is there, the result is not;
    # the rerun evaluates it without training again (Composer would refuse to fit it)
    cfg.keep_checkpoints = True
    result_path(cfg.out, run).unlink()
    execute([run], data, cfg, progress=False)  # trains again, keeps its final checkpoint
    assert (cfg.work / "runs" / run.run_id / "checkpoints" / "latest-rank0.pt").exists()
    result_path(cfg.out, run).unlink()
    summary = execute([run], data, cfg, progress=False)
    assert summary["ran"] == 1 and not summary["failed"], summary
    batches = cfg.work / "runs" / run.run_id / "batches.jsonl"
    assert len(batches.read_text().splitlines()) == 2  # the two steps of the first attempt


def test_cli_dry_run_lists_the_grid_and_bad_input_is_a_usage_error(capsys):
    from commands.cli import main
    from recipes.config import load_recipe

    model = load_recipe("recipes/tiny-synthetic.yaml").model
    cells, runs = expand(grid_around_recipe(model.video_mask_ratio, model.text_mask_ratio,
                                            seeds=(0, 1, 2), axes=("losses", "video_mask")))
    assert main(["experiment", "--dry-run", "--axes", "losses,video_mask", "--seeds", "0,1,2"]) == 0
    out = capsys.readouterr().out
    assert f"{len(cells)} cells, {len(runs)} distinct runs" in out and out.count("(baseline)") == 2
    assert len(runs) == 3 * (len(cells) - 1)  # the two baseline cells share their runs
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "--dry-run", "--axes", "colour"])
    assert exit_info.value.code == 2
    assert "unknown or no axes ['colour']" in capsys.readouterr().err


def test_data_is_built_once_with_nested_fractions_and_reused(tmp_path):
    import pyarrow.parquet as pq

    from commands.experiment.data import RECORD, DataPlan, build_data

    plan = DataPlan(num_clips=30, num_test=6, seed=2, workers=2)
    data = build_data(tmp_path, plan, (0.3, 1.0))
    assert 0 < data.train_clips[0.3] < data.train_clips[1.0] <= 30 and data.test_clips == 6

    def keys(folder: Path) -> set[str]:
        rows = pq.read_table(folder / "manifest.parquet").to_pylist()
        return {r["key"] for r in rows if r["status"] == "ok"}

    assert keys(data.train[0.3]) < keys(data.train[1.0])  # nested subsets, sharded apart
    assert (data.train[1.0] / "mds" / "index.json").is_file() and (data.test / "mds").is_dir()
    assert data.facts["shared_pairs"] == 0 and data.facts["codec"] == "vp9"
    stamp = (tmp_path / RECORD).stat().st_mtime_ns
    again = build_data(tmp_path, plan, (0.3, 1.0))
    assert again.to_json() == data.to_json() and (tmp_path / RECORD).stat().st_mtime_ns == stamp
    # a grid with fewer shares reuses the record without shrinking it; one with another share
    # adds it and keeps the others: a run's data identity (its fingerprint) stays the same
    assert build_data(tmp_path, plan, (1.0,)).to_json() == data.to_json()
    more = build_data(tmp_path, plan, (0.1, 1.0))
    assert set(more.train) == {0.1, 0.3, 1.0} and more.identity == data.identity
    assert more.train[0.3] == data.train[0.3] and more.train_clips[0.3] == data.train_clips[0.3]
