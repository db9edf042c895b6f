"""The divergence guard: a non-finite loss term or gradient stops `vtp train` before the
optimizer step, names the term and step, and leaves the last good checkpoint in place; the
losses and the MVM target stay fp32 under bf16 autocast."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from composer import Callback
from train_fixtures import train_shards  # noqa: F401  (session fixture)

import recipes
import recipes.train
from commands.cli import main as vtp_main
from model import UnifiedMAE
from model.synthetic import random_batch
from recipes.checkpoint import load_trained_model
from recipes.config import load_recipe
from recipes.guard import DivergenceError, DivergenceGuard

TINY = Path(recipes.__file__).parent / "tiny-synthetic.yaml"


class PoisonLoss(Callback):
    """Makes the MVM term (and so the total) NaN in the forward pass of step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_forward(self, state, logger) -> None:
        if int(state.timestamp.batch) + 1 == self.step:
            nan = torch.tensor(float("nan"))
            state.outputs["loss_mvm"] = state.outputs["loss_mvm"] * nan
            state.outputs["loss"] = state.outputs["loss"] * nan


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, train_shards, monkeypatch, capsys):  # noqa: F811
    original = recipes.train._callbacks
    monkeypatch.setattr(recipes.train, "_callbacks",
                        lambda recipe, device: [*original(recipe, device), PoisonLoss(step=4)])
    ckpt = tmp_path / "ckpt"
    overrides = [f"data.path={train_shards}", "trainer.global_batch_size=4",
                 "trainer.device_train_microbatch_size=4", "trainer.max_duration=6ba",
                 "trainer.save_interval=2ba", f"trainer.save_folder={ckpt}",
                 "scheduler.t_warmup=1ba", "loggers.console=false", "loggers.progress_bar=false",
                 f"loggers.file={tmp_path}/log.txt", "loggers.tensorboard=null",
                 "trainer.autoresume=false"]
    code = vtp_main(["train", str(TINY), *overrides])
    err = capsys.readouterr().err
    assert code == 1
    assert "training diverged at step 4: loss term mvm = nan" in err, err
    assert "Traceback" not in err
    # step 4 never reached the optimizer and nothing was saved after step 2
    assert sorted(p.name for p in ckpt.glob("*.pt")) == ["ep0-ba2-rank0.pt", "latest-rank0.pt"]
    assert (ckpt / "latest-rank0.pt").resolve().name == "ep0-ba2-rank0.pt"
    kept = load_trained_model(ckpt / "latest-rank0.pt")
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    card = json.loads((ckpt / "run_card.json").read_text())
    assert card["status"] == "diverged" and "step 4" in card["failure"]
    assert card["losses"]["final"]["step"] == 3
    # the global gradient norm is logged every step, the diverging one included
    norms = [float(line.rsplit(":", 1)[1]) for line in (tmp_path / "log.txt").read_text()
             .splitlines() if "grad_norm/global" in line]
    assert len(norms) == 4 and all(map(math.isfinite, norms[:3])) and math.isnan(norms[3]), norms


def _state(model: torch.nn.Module, batch: int = 6) -> SimpleNamespace:
    return SimpleNamespace(model=model, timestamp=SimpleNamespace(batch=batch), callbacks=[],
                           loss={"total": torch.tensor(1.0), "mvm": torch.tensor(1.0)})


class _Logger:
    def __init__(self) -> None:
        self.metrics: dict = {}

    def log_metrics(self, metrics: dict) -> None:
        self.metrics.update(metrics)


def test_infinite_gradient_names_the_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model(torch.ones(1, 3)).sum().backward()
    guard, logger = DivergenceGuard("runs/x/checkpoints"), _Logger()
    state = _state(model)
    guard.batch_start(state, logger)
    guard.after_loss(state, logger)
    guard.after_train_batch(state, logger)  # all finite: no stop, the norm is logged
    assert logger.metrics["grad_norm/global"] > 0
    model[1].weight.grad[0, 1] = float("inf")
    with pytest.raises(DivergenceError, match=r"step 7: gradient norm = inf \(first bad "
                                              r"parameter: 1\.weight\)"):
        guard.after_train_batch(state, logger)


def test_inf_loss_term_is_named_rather_than_the_total():
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    guard, logger = DivergenceGuard(None), _Logger()
    state = _state(model, batch=0)
    state.loss = {"total": torch.tensor(float("inf")), "mvm": torch.tensor(1.0),
                  "vtc": torch.tensor(float("inf"))}
    guard.batch_start(state, logger)
    guard.after_loss(state, logger)
    with pytest.raises(DivergenceError, match="step 1: loss term vtc = inf.*saves no checkpoints"):
        guard.after_train_batch(state, logger)


def test_losses_and_mvm_target_are_fp32_under_bf16_autocast():
    config = load_recipe(TINY, ["data.path=unused"]).model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UnifiedMAE(config)
    batch = random_batch(config, 4, text_len=16, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        target = model.video_target(batch["video"].bfloat16())
    for term in ("loss", "loss_mvm", "loss_mlm", "loss_vtc", "loss_vtm"):
        assert out[term].dtype == torch.float32, term
        assert torch.isfinite(out[term]), term
    assert target.dtype == torch.float32
    # the per-tube normalisation runs in fp32 even on a bf16 input: it matches fp32 exactly
    assert torch.equal(target, model.video_target(batch["video"].bfloat16().float()))
