"""End-to-end training on CPU: the tiny recipe through `vtp train`, autoresume, two processes.

Every run is a real subprocess (as a user runs it), reading small VP9 MDS shards of the
synthetic dataset; the recipe's BatchLog callback records, per rank and batch, the sample keys
and the losses, which is what the assertions read.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import train_shards  # noqa: F401  (session fixture)

import recipes
from model import flops_per_batch
from model.synthetic import random_batch
from recipes.checkpoint import load_trained_model
from recipes.config import load_recipe
from recipes.train import build_model

TINY = Path(recipes.__file__).parent / "tiny-synthetic.yaml"
COMPOSER = Path(sys.executable).parent / "composer"
TIMEOUT = 240


def _overrides(shards: Path, work: Path, max_batches: int, batch: int = 4) -> list[str]:
    return [f"data.path={shards}", f"trainer.global_batch_size={batch}",
            f"trainer.device_train_microbatch_size={batch // 2 if batch > 2 else batch}",
            f"trainer.max_duration={max_batches}ba", "trainer.save_interval=3ba",
            f"trainer.save_folder={work}/ckpt", "scheduler.t_warmup=2ba",
            f"callbacks.batch_log={work}/batches-rank{{rank}}.jsonl", "callbacks.speed_window=2",
            "loggers.console=false", "loggers.progress_bar=false",
            f"loggers.file={work}/log-rank{{rank}}.txt", f"loggers.tensorboard={work}/tb"]


def _command(overrides: list[str], nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "commands.cli", "train", str(TINY), *overrides]
    return [str(COMPOSER), "-n", str(nproc), "--stdout", "rank{rank}.out", "--stderr",
            "rank{rank}.err", "-m", "commands.cli", "train", str(TINY), *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(work: Path, overrides: list[str], nproc: int = 1) -> str:
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(_command(overrides, nproc), cwd=work, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"training failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _batches(work: Path, rank: int = 0) -> list[dict]:
    path = work / f"batches-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _train_until_killed(work: Path, overrides: list[str], kill_after: int) -> None:
    """Starts training and SIGKILLs it (a preemption) once ``kill_after`` batches are logged."""
    work.mkdir(parents=True, exist_ok=True)
    log = (work / "killed-run.log").open("w")
    proc = subprocess.Popen(_command(overrides), cwd=work, env=_env(), stdout=log, stderr=log)
    deadline = time.monotonic() + TIMEOUT
    while len(_batches(work)) < kill_after and proc.poll() is None:
        assert time.monotonic() < deadline, "the run to interrupt never got going"
        time.sleep(0.05)
    ended = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    log.close()
    assert not ended, \
        f"the run ended before the kill: {(work / 'killed-run.log').read_text()[-3000:]}"


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, train_shards) -> tuple[Path, list[dict]]:  # noqa: F811
    """8 uninterrupted batches of 4 (two epochs of the 16 clips), checkpoints every 3."""
    work = tmp_path_factory.mktemp("straight")
    stdout = _train(work, _overrides(train_shards, work, 8))
    assert "run tiny-synthetic: 8 batches, 32 samples, 2 full epochs" in stdout, stdout[-2000:]
    assert "last checkpoint: " in stdout and "ep1-ba8-rank0.pt" in stdout
    return work, _batches(work)


def test_tiny_recipe_trains_with_finite_falling_losses(straight_run):
    work, batches = straight_run
    assert [b["batch"] for b in batches] == list(range(1, 9))
    terms = {"total", "mvm", "mlm", "vtc", "vtm"}
    assert all(set(b["loss"]) == terms for b in batches)
    assert all(math.isfinite(v) for b in batches for v in b["loss"].values())
    # 8 steps of batch 4: the reconstruction terms fall; VTC/VTM on 4 pairs are only noisy
    for term in ("mlm", "mvm"):
        values = [b["loss"][term] for b in batches]
        assert sum(values[-3:]) < sum(values[:3]), f"{term} did not fall: {values}"
    # warm-up over 2 batches, then cosine to min_lr 1e-5. Composer 0.32 steps the scheduler
    # before it advances the batch counter, so step k uses lr(k-2): steps 1 and 2 both use 0.
    lr = [b["lr"] for b in batches]
    assert lr[:4] == [0.0, 0.0, pytest.approx(5e-4), pytest.approx(1e-3)], lr
    assert all(a > b >= 1e-5 for a, b in zip(lr[3:], lr[4:], strict=False)), lr
    epoch = [k for b in batches[:4] for k in b["keys"]]
    assert len(epoch) == len(set(epoch)) == 16, "one epoch visits each clip once"
    checkpoints = {p.name for p in (work / "ckpt").glob("*.pt")}
    # saved every 3 batches and at the end; the recipe keeps the newest two
    assert checkpoints == {"ep1-ba6-rank0.pt", "ep1-ba8-rank0.pt", "latest-rank0.pt"}
    assert list((work / "tb").rglob("events.out.tfevents.*")), "no TensorBoard events written"
    trained = load_trained_model(work / "ckpt" / "latest-rank0.pt")
    assert trained.config == load_recipe(TINY).model, "the checkpoint carries its ModelConfig"
    saved = torch.load(work / "ckpt" / "ep1-ba8-rank0.pt", weights_only=False)["state"]["model"]
    assert torch.equal(trained.mask_token, saved["model.mask_token"])
    assert not torch.equal(trained.mask_token, build_model(load_recipe(TINY)).model.mask_token)
    with torch.no_grad():
        assert trained.encode_video(random_batch(trained.config, 2)["video"]).shape == (2, 128)
    log = (work / "log-rank0.txt").read_text()
    assert "recipe.trainer.global_batch_size: 4" in log and "loss/train/mvm" in log


def test_autoresume_after_kill_continues_the_same_run(straight_run, tmp_path, train_shards):  # noqa: F811
    _, reference = straight_run
    work = tmp_path / "killed"
    overrides = _overrides(train_shards, work, 8)
    _train_until_killed(work, overrides, kill_after=5)
    before = _batches(work)
    assert len(before) < 8, "the run finished before the kill"
    (work / "batches-rank0.jsonl").rename(work / "before-kill.jsonl")
    _train(work, overrides)  # same command: autoresume picks up the latest checkpoint
    after = _batches(work)
    resumed_from = after[0]["batch"] - 1
    assert resumed_from in (3, 6), f"expected to resume from a saved step, got batch {resumed_from}"
    assert [b["batch"] for b in after] == list(range(resumed_from + 1, 9))
    for got, want in zip(after, reference[resumed_from:], strict=True):
        assert got["keys"] == want["keys"], f"batch {got['batch']}: the data stream moved"
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-9)
        for term, value in want["loss"].items():
            assert got["loss"][term] == pytest.approx(value, rel=1e-5, abs=1e-6), (
                f"batch {got['batch']} {term}: {got['loss'][term]} != {value}")


def test_two_cpu_processes_then_resume_in_one(tmp_path, train_shards):  # noqa: F811
    work = tmp_path / "ddp"
    _train(work, _overrides(train_shards, work, 4), nproc=2)
    ranks = [_batches(work, rank) for rank in (0, 1)]
    assert all([b["batch"] for b in r] == [1, 2, 3, 4] for r in ranks)
    assert all(len(b["keys"]) == 2 for r in ranks for b in r), "global batch 4 = 2 per rank"
    seen = [[k for b in r for k in b["keys"]] for r in ranks]
    assert not set(seen[0]) & set(seen[1]), "the two ranks trained on the same samples"
    assert len(set(seen[0]) | set(seen[1])) == 16, "together the ranks cover the epoch"
    assert all(math.isfinite(v) for r in ranks for b in r for v in b["loss"].values())
    saved = sorted((work / "ckpt").glob("ep*-ba4-rank*.pt"))
    assert [p.name.split("-")[-1] for p in saved] == ["rank0.pt"], \
        "DDP: rank 0 writes the checkpoint"
    checkpoint = saved[0]

    single = tmp_path / "single"
    resume = _overrides(train_shards, single, 6) + [
        f"trainer.load_path={checkpoint}", "trainer.autoresume=false"]
    _train(single, resume)
    batches = _batches(single)
    assert [b["batch"] for b in batches] == [5, 6], "did not continue from the 2-process step"
    assert all(len(b["keys"]) == 4 for b in batches)
    assert all(math.isfinite(v) for b in batches for v in b["loss"].values())


@pytest.mark.parametrize("recipe, terms", [
    ("tiny-synthetic.yaml", ("mvm", "mlm", "vtc", "vtm")),
    ("videomae-vitb.yaml", ("mvm",)),
])
def test_composer_adapter_losses_metrics_and_flops(recipe, terms):
    cfg = load_recipe(TINY.parent / recipe, ["model.size=tiny"])
    model = build_model(cfg)
    batch = random_batch(cfg.model, 4, text_len=16, seed=1)
    out = model(batch)
    loss = model.loss(out, batch)
    assert set(loss) == {"total", *terms} and loss["total"] is out["loss"]
    assert torch.allclose(sum(loss[t] for t in terms), loss["total"])  # weights are 1
    assert model.eval_forward(batch, out) is out, "train metrics must not cost a second pass"
    metrics = {k: m.clone() for k, m in model.get_metrics(is_train=True).items()}
    assert set(metrics) == {f"loss_{t}" for t in terms}
    second = model(random_batch(cfg.model, 4, text_len=16, seed=2))
    for outputs in (out, second):
        for metric in metrics.values():
            model.update_metric(batch, outputs, metric)
    for t in terms:
        mean = (out[f"loss_{t}"] + second[f"loss_{t}"]) / 2
        assert metrics[f"loss_{t}"].compute() == pytest.approx(float(mean), rel=1e-5)
    assert model.flops_per_batch(batch) == flops_per_batch(cfg.model, batch) > 0
