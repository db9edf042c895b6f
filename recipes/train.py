"""The one training entry point: a validated recipe -> model, data, optimizer -> Composer fit.

Runs the same in one process (``vtp train``) and under Composer's launcher
(``composer -n 2 -m commands.cli train recipes/tiny-synthetic.yaml``): each process builds its
own data partition (Streaming splits samples by rank) with ``global_batch_size / world``
samples per batch, and Composer's DDP averages gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch
from composer import Callback, Trainer
from composer.algorithms import GradientClipping
from composer.callbacks import LRMonitor, MemoryMonitor, RuntimeEstimator, SpeedMonitor
from composer.loggers import FileLogger, LoggerDestination, TensorboardLogger
from composer.utils import dist

from model import UnifiedMAE, flops_per_batch
from model.interop import InitError, InitReport, init_text, init_video
from pipeline import DataConfig, build_dataspec
from pipeline.device import resolve_device
from recipes.callbacks import BadSamples, BatchLog
from recipes.checkpoint import check_checkpoints_to_load
from recipes.composer_model import VTPComposerModel
from recipes.config import InitConfig, RecipeConfig, RecipeError, load_recipe
from recipes.curves import Curves
from recipes.data_settings import DataSettings
from recipes.guard import DivergenceGuard
from recipes.optim import build_optimizer, build_scheduler
from recipes.run_card import RunCard, after_checkpoint_saver
from recipes.trackers import CardArtifacts, tracker_loggers

__all__ = ["train_from_yaml", "build_trainer", "build_model", "initialise", "summary",
           "finished_at"]


def train_from_yaml(path: str | Path, overrides: Sequence[str] = (),
                    callbacks: Sequence[Callback] = ()) -> Trainer:
    """Load a recipe, apply ``section.key=value`` overrides, train, and return the Trainer.

    Args:
        path: the YAML recipe.
        overrides: dotted overrides such as ``data.path=/shards`` or ``trainer.max_duration=20ba``.
        callbacks: extra Composer callbacks, added after the recipe's own.
    """
    trainer = build_trainer(load_recipe(path, overrides), callbacks)
    if finished_at(trainer) is None:
        trainer.fit()
    return trainer


def finished_at(trainer: Trainer) -> int | None:
    """The batches of a run that autoresume found already at ``max_duration``, else None
    (Composer's fit would raise on it; a rerun of a finished run is not an error)."""
    state = trainer.state
    if state.max_duration is None or int(state.timestamp.batch) == 0:
        return None
    try:
        done = state.timestamp.get(state.max_duration.unit) >= state.max_duration
    except (ValueError, TypeError):  # a unit the timestamp does not count (dur)
        return None
    return int(state.timestamp.batch) if done else None


def summary(trainer: Trainer) -> str:
    """One paragraph on a finished fit: steps, samples, speed, last losses, last checkpoint."""
    state, ts = trainer.state, trainer.state.timestamp
    seconds = ts.total_wct.total_seconds()
    losses = ", ".join(f"{k.removeprefix('loss/train/')} {v:.4f}"
                       for k, v in (getattr(state, "total_loss_dict", None) or {}).items())
    saved = trainer.saved_checkpoints
    return (f"run {state.run_name}: {int(ts.batch)} batches, {int(ts.sample)} samples, "
            f"{int(ts.epoch)} full epochs in {seconds:.0f} s of training "
            f"({int(ts.sample) / max(seconds, 1e-9):.1f} samples/s); last batch losses: "
            f"{losses or 'none'}; last checkpoint: {saved[-1] if saved else 'none'}")


def build_model(recipe: RecipeConfig) -> VTPComposerModel:
    """UnifiedMAE from ``recipe.model``, initialised from ``recipe.seed`` without touching
    the caller's global RNG state, wrapped for Composer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = UnifiedMAE(recipe.model)
    reports = initialise(net, recipe.init)
    flops = functools.partial(flops_per_batch, recipe.model)
    composer_model = VTPComposerModel(net, recipe.model.active_terms, flops,
                                      DataSettings.of(recipe.data))
    composer_model.init_reports = reports
    return composer_model


def initialise(net: UnifiedMAE, init: InitConfig) -> dict[str, InitReport]:
    """Load ``init.video`` / ``init.text`` into ``net``; print what was loaded (rank 0).

    Raises:
        RecipeError: a file that does not fit, listing every mismatch (exit 2 in `vtp train`).
    """
    reports = {}
    for name, path, load in (("video", init.video, init_video), ("text", init.text, init_text)):
        if not path:
            continue
        try:
            reports[name] = load(net, path)
        except InitError as err:
            raise RecipeError(f"init.{name}: {err}") from err
        if dist.get_global_rank() == 0:
            print(reports[name].summary(name), flush=True)
    return reports


def build_trainer(recipe: RecipeConfig, callbacks: Sequence[Callback] = ()) -> Trainer:
    """Everything ``fit`` needs, from a validated recipe.

    Args:
        recipe: the validated recipe.
        callbacks: extra callbacks, added after the recipe's own.
    """
    device = _device(recipe)
    if recipe.trainer.torch_threads:
        torch.set_num_threads(recipe.trainer.torch_threads)
    data_cfg = _data_config(recipe, device)  # the world size comes from the launcher's env
    dist.initialize_dist(device)
    check_checkpoints_to_load(recipe, dist.get_global_rank())
    model = build_model(recipe)
    t, log = recipe.trainer, recipe.loggers
    trainer = Trainer(
        model=model, train_dataloader=build_dataspec(data_cfg), max_duration=t.max_duration,
        optimizers=build_optimizer(model, recipe), schedulers=build_scheduler(recipe),
        step_schedulers_every_batch=True,
        algorithms=[GradientClipping("norm", t.clip_grad_norm)] if t.clip_grad_norm else None,
        callbacks=[*_callbacks(recipe, device), *callbacks], loggers=_loggers(recipe),
        run_name=recipe.run_name, progress_bar=log.progress_bar, log_to_console=log.console,
        console_log_interval=log.console_interval, console_stream="stdout",
        save_folder=t.save_folder, save_interval=t.save_interval,
        save_num_checkpoints_to_keep=t.save_num_checkpoints_to_keep,
        autoresume=t.autoresume, load_path=t.load_path, device=device,
        precision=_precision(recipe, device),
        device_train_microbatch_size=t.device_train_microbatch_size, seed=recipe.seed,
    )
    # every logger records the resolved recipe, overrides and derived values included
    trainer.logger.log_hyperparameters({"recipe." + k: v for k, v in recipe.flat().items()})
    trainer.logger.log_hyperparameters(
        {f"init.{name}.report": report.lines() for name, report in model.init_reports.items()})
    after_checkpoint_saver(trainer.state.callbacks)  # run card and curves see each new checkpoint
    return trainer


def _device(recipe: RecipeConfig) -> str:
    try:
        return resolve_device(recipe.trainer.device, "trainer.device")
    except ValueError as err:
        raise RecipeError(str(err)) from None


def _precision(recipe: RecipeConfig, device: str) -> str:
    precision = recipe.trainer.precision
    if precision == "auto":
        return "amp_bf16" if device == "gpu" else "fp32"
    if device == "cpu" and precision != "fp32":
        raise RecipeError(f"trainer.precision={precision} is not supported on CPU; use fp32")
    return precision


def _data_config(recipe: RecipeConfig, device: str) -> DataConfig:
    data = recipe.data_for_world(dist.get_world_size())
    if not data.path and not data.remote:
        raise RecipeError("data.path is empty: pass data.path=SHARD_DIR")
    if data.device == "gpu" and device != "gpu":
        raise RecipeError("data.device=gpu (DALI mixed decoding) needs trainer.device gpu")
    if data.remote:
        _check_remote(data.remote)
    return data


def _check_remote(remote: str) -> None:
    """A wrong bucket, credentials or endpoint fails here, once, before Streaming retries it."""
    from pipeline.storage import StorageError, check_access, exists, is_remote, join

    if not is_remote(remote):
        return  # other schemes: Streaming's own checks
    try:
        check_access(remote)
        if not exists(join(remote, "index.json")):
            raise StorageError(f"{remote} has no index.json: point data.remote at the mds/ "
                               "folder of a `vtp shard` or `vtp merge` output")
    except StorageError as err:
        raise RecipeError(f"data.remote: {err}") from None


def _callbacks(recipe: RecipeConfig, device: str) -> list[Callback]:
    cb = recipe.callbacks
    out: list[Callback] = []
    if cb.speed_monitor:
        out.append(SpeedMonitor(window_size=cb.speed_window,
                                gpu_flops_available=cb.gpu_flops_available))
    if cb.lr_monitor:
        out.append(LRMonitor())
    if cb.memory_monitor and device == "gpu":
        out.append(MemoryMonitor())
    if cb.runtime_estimator:
        out.append(RuntimeEstimator())
    if cb.batch_log:
        out.append(BatchLog(cb.batch_log))
    out.append(BadSamples(recipe.data.max_bad_samples))
    if cb.divergence_guard:
        out.append(DivergenceGuard(recipe.trainer.save_folder))
    if cb.run_card:
        out.append(RunCard(recipe))
    if cb.curves:
        out.append(Curves(recipe.trainer.save_folder))
    if cb.run_card and (recipe.loggers.mlflow or recipe.loggers.wandb):
        out.append(CardArtifacts())
    return out


def _loggers(recipe: RecipeConfig) -> list[LoggerDestination]:
    log = recipe.loggers
    out: list[LoggerDestination] = []
    if log.file:
        out.append(FileLogger(filename=log.file, capture_stdout=False, capture_stderr=False))
    if log.tensorboard:
        out.append(TensorboardLogger(log_dir=log.tensorboard, flush_interval=1))
    out.extend(tracker_loggers(recipe))
    return out
