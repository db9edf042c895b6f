"""Runs the grid's pending runs, each in its own process, ``jobs`` at a time, with progress.

A run is finished when ``OUT/runs/RUN_ID.json`` exists; a rerun skips those, so an
interrupted grid continues where it stopped. Checkpoints and logs live under
``WORK/runs/RUN_ID/`` (the log stays; the checkpoint is removed once evaluated).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from commands.experiment.data import DataPaths
from commands.experiment.grid import LOSSES, Run, Setting


@dataclass
class RunnerConfig:
    """Where runs write and what they train.

    Args:
        recipe: the training recipe (YAML path or shipped name).
        out: report folder; per-run results go to ``out/runs/``.
        work: scratch folder for checkpoints and per-run logs.
        max_duration: training length of every run (a Composer time such as ``300ba``);
            equal-epochs runs train its share (steps, so it must be in ``ba``).
        batch_size: the recipe's global batch size (a subset must hold at least one batch).
        vtc_weight, vtm_weight: the recipe's weights, used where a setting switches a term on.
        keep_checkpoints: keep each run's final checkpoint after its evaluation.
        gallery_size: rank each held-out query within a gallery of about this many clips.
        extra_overrides: more ``section.key=value`` overrides applied to every run.
        jobs: runs trained at once, each in its own process with the recipe's threads.
    """

    recipe: str
    out: Path
    work: Path
    max_duration: str
    batch_size: int
    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    keep_checkpoints: bool = False
    gallery_size: int | None = None
    extra_overrides: tuple[str, ...] = ()
    jobs: int = 1


def result_path(out: Path, run: Run) -> Path:
    return out / "runs" / f"{run.run_id}.json"


def pending(runs: list[Run], out: Path, fingerprints: dict[str, str] | None = None) -> list[Run]:
    """The runs without a current result, in order.

    Args:
        runs: the grid's runs.
        out: the report folder.
        fingerprints: ``{run_id: fingerprint}``; a result made with another fingerprint (a
            setting of the recipe or of the run changed since) is stale and counts as pending.
    """
    return [run for run in runs if _current(result_path(out, run), run, fingerprints) is None]


def load_results(runs: list[Run], out: Path,
                 fingerprints: dict[str, str] | None = None) -> dict[str, dict]:
    """``{run_id: result}`` of the finished, current runs among ``runs``."""
    found = {}
    for run in runs:
        result = _current(result_path(out, run), run, fingerprints)
        if result is not None:
            found[run.run_id] = result
    return found


def _current(path: Path, run: Run, fingerprints: dict[str, str] | None) -> dict | None:
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if fingerprints is not None and result.get("fingerprint") != fingerprints[run.run_id]:
        return None
    return result


def recipe_digest(recipe: str, run_overrides: list[str] | tuple[str, ...] = ()) -> str:
    """16 hex digits naming the resolved settings of ``recipe`` with ``run_overrides``
    (comments, key order and the file's path do not count; every value does)."""
    from recipes.config import load_recipe

    flat = load_recipe(recipe, list(run_overrides)).flat()
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The built datasets by synthetic-data seed (a setting's ``data_seed`` picks one).
Datasets = dict[int, DataPaths]


def check_duration(max_duration: str) -> None:
    """Equal-epochs runs scale the grid's duration, so it must count batches.

    Raises:
        ValueError: a duration such as ``2ep`` or ``10m``.
    """
    if not max_duration.endswith("ba") or not max_duration[:-2].isdigit():
        raise ValueError(f"equal-epochs runs scale a duration in batches (such as 300ba), got "
                         f"{max_duration!r}")


def run_duration(run: Run, data: Datasets, cfg: RunnerConfig) -> str:
    """The run's training length: the grid's, or at equal epochs its share by full batches
    (batches drop the last partial one, so epochs are counted in whole batches).

    Raises:
        ValueError: an equal-epochs run with a duration not in batches.
    """
    if not run.setting.equal_epochs:
        return cfg.max_duration
    check_duration(cfg.max_duration)
    clips = data[run.setting.data_seed].train_clips
    batches = {f: max(1, n // cfg.batch_size) for f, n in clips.items()}
    steps = int(cfg.max_duration[:-2]) * batches[run.setting.fraction] / batches[1.0]
    return f"{max(1, round(steps))}ba"


def fingerprints(runs: list[Run], data: Datasets, cfg: RunnerConfig) -> dict[str, str]:
    """``{run_id: digest of the run's resolved recipe, its data's identity and the gallery
    size}``: a result made with other settings, on other data or ranked among other
    galleries is stale (see `pending`)."""
    return {run.run_id: _fingerprint(recipe_digest(cfg.recipe, overrides(run, data, cfg)),
                                     data[run.setting.data_seed].identity, cfg.gallery_size)
            for run in runs}


def _fingerprint(recipe: str, identity: dict, gallery_size: int | None) -> str:
    text = json.dumps([recipe, identity, gallery_size], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def overrides(run: Run, data: Datasets, cfg: RunnerConfig) -> list[str]:
    """The recipe overrides that make ``run``: data, length, seed, masks, losses, outputs."""
    s: Setting = run.setting
    vtc_on, vtm_on = LOSSES[s.losses]
    folder = (cfg.work / "runs" / run.run_id).resolve()
    duration = run_duration(run, data, cfg)
    return [
        f"data.path={data[s.data_seed].train[s.fraction].resolve()}",
        f"trainer.max_duration={duration}",
        f"seed={run.seed}",
        f"model.video_mask_ratio={s.video_mask_ratio}",
        f"model.text_mask_ratio={s.text_mask_ratio}",
        f"model.vtc_weight={cfg.vtc_weight if vtc_on else 0.0}",
        f"model.vtm_weight={cfg.vtm_weight if vtm_on else 0.0}",
        f"run_name=exp-{run.run_id}",
        f"trainer.save_folder={folder / 'checkpoints'}",
        f"trainer.save_interval={duration}",  # only the final checkpoint
        "trainer.save_num_checkpoints_to_keep=1",
        "trainer.autoresume=true",  # a run cut off during evaluation does not train again
        f"callbacks.batch_log={folder / 'batches.jsonl'}",
        "loggers.file=null",
        "loggers.tensorboard=null",
        "loggers.progress_bar=false",
        *cfg.extra_overrides,
    ]


def spec(run: Run, data: Datasets, cfg: RunnerConfig, fingerprint: str = "") -> dict:
    """Everything the worker process needs for ``run`` (written to a json it reads)."""
    folder = (cfg.work / "runs" / run.run_id).resolve()
    dataset = data[run.setting.data_seed]
    return {
        "run_id": run.run_id,
        "fingerprint": fingerprint,
        "run": {**vars(run.setting), "seed": run.seed,
                "train_clips": dataset.train_clips[run.setting.fraction],
                "max_duration": run_duration(run, data, cfg)},
        "recipe": str(cfg.recipe),
        "overrides": overrides(run, data, cfg),
        "checkpoint_folder": str(folder / "checkpoints"),
        "batch_log": str(folder / "batches.jsonl"),
        "eval_out": str(folder / "eval"),
        "test": str(dataset.test.resolve()),
        "gallery_size": cfg.gallery_size,
        "result": str(result_path(cfg.out, run)),
        "keep_checkpoints": cfg.keep_checkpoints,
    }


def check_sizes(runs: list[Run], data: Datasets, batch_size: int) -> None:
    """Every run's training set must hold at least one full batch (batches drop the rest).

    Raises:
        ValueError: a fraction's shards hold fewer clips than one batch.
    """
    for run in runs:
        clips = data[run.setting.data_seed].train_clips[run.setting.fraction]
        if clips < batch_size:
            raise ValueError(
                f"the {run.setting.fraction:.0%} subset has {clips} clips, fewer than one batch of "
                f"{batch_size}: generate more clips (--num-clips) or drop that fraction")


# the worker reads the runner's pid here and dies with it (tools.shard.lifeline)
PARENT_ENV = "VTP_EXPERIMENT_PARENT"


def run_worker(spec_path: Path, log, tick: Callable[[int], None], stop: threading.Event,
               started: Callable[[], None] | None = None, poll: float = 2.0,
               startup_timeout: float = 300.0) -> int:
    """Runs the worker process on ``spec_path``; returns its exit status.

    Args:
        spec_path: the run's spec json (its folder also receives the batch log).
        log: an open file for the worker's stdout and stderr.
        tick: called with the number of finished training steps while the worker runs.
        stop: when set, the worker is killed and the run stays pending.
        started: called once, when the worker has trained a step (its batch log grew: a
            resumed run's log already has lines), ended, or run ``startup_timeout`` seconds.
        poll: seconds between progress checks.
    """
    batch_log = Path(json.loads(spec_path.read_text())["batch_log"])
    logged = batch_log.stat().st_size if batch_log.is_file() else 0
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    begin = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "commands.experiment.worker", str(spec_path)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while not stop.is_set():
            try:
                return process.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                grew = batch_log.is_file() and batch_log.stat().st_size > logged
                if grew:
                    with batch_log.open("rb") as lines:
                        tick(sum(1 for _ in lines))
                if started and (grew or time.monotonic() - begin > startup_timeout):
                    started()
                    started = None
        return -1
    finally:
        if started:
            started()
        # stopped, Ctrl-C or an error here: end the worker; the run stays pending
        if process.poll() is None:
            process.kill()
            process.wait()


def _clear_stale(folder: Path, fingerprint: str) -> None:
    """Removes what an earlier attempt at this run left that the next one must not reuse:
    a checkpoint from other settings (autoresume would load it), and the batch log of an
    attempt that left no checkpoint to resume from."""
    spec_path = folder / "spec.json"
    old = json.loads(spec_path.read_text()).get("fingerprint") if spec_path.is_file() else None
    if old != fingerprint:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    if not (folder / "checkpoints").is_dir():
        (folder / "batches.jsonl").unlink(missing_ok=True)


def _train(run: Run, data: Datasets, cfg: RunnerConfig, fingerprint: str,
           tick: Callable[[str], None], stop: threading.Event,
           startup: threading.Lock) -> tuple[int, float]:
    """One run in its worker process: (exit status, seconds from its start).

    Workers start one at a time (``startup`` is held until the worker's first step):
    Streaming registers each dataset's shared memory with a check-then-create that two
    processes starting together can both pass (FileExistsError on /dev/shm/NNNNNN_locals).
    """
    folder = cfg.work / "runs" / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    _clear_stale(folder, fingerprint)
    spec_path.write_text(json.dumps(spec(run, data, cfg, fingerprint), indent=1) + "\n")
    duration = run_duration(run, data, cfg)
    holding = False

    def started() -> None:
        nonlocal holding
        if holding:
            holding = False
            startup.release()

    try:
        holding = startup.acquire()
        if stop.is_set():
            return -1, 0.0
        start = time.perf_counter()
        with (folder / "log.txt").open("w") as log:
            code = run_worker(spec_path, log,
                              lambda step: tick(f"{run.run_id} step {step}/{duration}"), stop,
                              started)
        return code, time.perf_counter() - start
    finally:
        started()


def _record(run: Run, cfg: RunnerConfig, code: int, seconds: float) -> bool:
    """Reports a finished worker; adds its wall time to the result. False when it failed."""
    folder = cfg.work / "runs" / run.run_id
    if code != 0 or not result_path(cfg.out, run).is_file():
        tail = (folder / "log.txt").read_text().splitlines()[-15:]
        tqdm.write(f"run {run.run_id} FAILED (status {code}); log {folder / 'log.txt'}:\n  "
                   + "\n  ".join(tail))
        return False
    result = json.loads(result_path(cfg.out, run).read_text())
    result["wall_seconds"] = round(seconds, 1)  # train + eval + process start
    result_path(cfg.out, run).write_text(json.dumps(result, indent=1) + "\n")
    m = result["metrics"]
    tqdm.write(f"run {run.run_id}: t2v R@1 {m['t2v_r1']:.1f} R@5 {m['t2v_r5']:.1f} "
               f"v2t R@1 {m['v2t_r1']:.1f} (chance {m['chance_r1']:.2f}) in {seconds:.0f} s")
    return True


def execute(runs: list[Run], data: Datasets, cfg: RunnerConfig, progress: bool = True) -> dict:
    """Runs every pending run of ``runs``, ``cfg.jobs`` at a time; returns counts and the ids
    that failed.

    A run is pending when it has no result made with its current fingerprint (its resolved
    recipe). A failed run (its worker exits non-zero) is reported with the tail of its log and left
    pending, so the next invocation retries it; the others still run. Ctrl-C or an error stops
    every worker.
    """
    prints = fingerprints(runs, data, cfg)
    todo = pending(runs, cfg.out, prints)
    check_sizes(todo, data, cfg.batch_size)
    failed: list[str] = []
    seconds: list[float] = []
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="experiment", unit="run",
               disable=not progress)
    active: dict[str, str] = {}

    def tick(run_id: str, text: str) -> None:
        active[run_id] = text
        bar.set_postfix_str("; ".join(active.values()))

    stop, startup = threading.Event(), threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, cfg.jobs)) as pool:
        futures = {pool.submit(_train, run, data, cfg, prints[run.run_id],
                               lambda text, r=run.run_id: tick(r, text), stop, startup): run
                   for run in todo}
        try:
            for future in as_completed(futures):
                run = futures[future]
                code, took = future.result()
                active.pop(run.run_id, None)
                seconds.append(took)
                if not _record(run, cfg, code, took):
                    failed.append(run.run_id)
                bar.update(1)
        except BaseException:
            stop.set()  # each worker thread kills its process within a poll
            for future in futures:
                future.cancel()
            raise
    bar.close()
    return {"runs": len(runs), "skipped": len(runs) - len(todo), "ran": len(todo) - len(failed),
            "failed": failed, "seconds": round(sum(seconds), 1),
            "seconds_per_run": round(sum(seconds) / len(seconds), 1) if seconds else None}
