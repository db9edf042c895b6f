"""The experiment trackers researchers already use: Composer's MLflow and W&B loggers.

``loggers.mlflow: {tracking_uri, experiment_name}`` and ``loggers.wandb: {project, mode}``
add Composer's own logger destinations (metrics, and the resolved recipe as hyperparameters);
:class:`CardArtifacts` attaches the run card to the tracked run when the run ends (or stops on
divergence). Their packages are the optional ``trackers`` extra; a recipe that names a tracker
whose package is missing fails before training with the install command.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from composer import Callback, Logger, State
from composer.loggers import LoggerDestination
from composer.utils import dist

from recipes.fields import RecipeError
from recipes.run_card import CARD_JSON, CARD_MD, RunCard

__all__ = ["tracker_loggers", "CardArtifacts"]


def _require(module: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise RecipeError(f"{key} needs the {module} package: pip install 'vtp[trackers]'")


def tracker_loggers(recipe) -> list[LoggerDestination]:
    """Composer's MLFlowLogger / WandBLogger for the recipe's ``loggers.mlflow`` / ``.wandb``."""
    log, out = recipe.loggers, []
    if log.mlflow:
        _require("mlflow", "loggers.mlflow")
        from composer.loggers import MLFlowLogger

        if "://" not in log.mlflow.tracking_uri or log.mlflow.tracking_uri.startswith("file:"):
            # a local folder is what mlflow-skinny can write (no SQL store); MLflow 3 refuses
            # it unless told that the file store is wanted
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # no system metrics: they need psutil/pynvml threads and are not what a card is for
        out.append(MLFlowLogger(experiment_name=log.mlflow.experiment_name,
                                run_name=recipe.run_name, tracking_uri=log.mlflow.tracking_uri,
                                log_system_metrics=False))
    if log.wandb:
        _require("wandb", "loggers.wandb")
        from composer.loggers import WandBLogger

        _wandb_run_get_url()
        out.append(WandBLogger(project=log.wandb.project, name=recipe.run_name,
                               init_kwargs={"mode": log.wandb.mode}))
    return out


def _wandb_run_get_url() -> None:
    """Composer 0.32's WandBLogger calls ``Run.get_url()``, which newer wandb replaced by the
    ``url`` property; the wandb that installs beside tensorboard 2.21 (protobuf >= 6) is newer."""
    from wandb.sdk.wandb_run import Run

    if not hasattr(Run, "get_url"):
        Run.get_url = lambda self: self.url


class CardArtifacts(Callback):
    """Attaches ``run_card.json`` / ``run_card.md`` to the MLflow and W&B runs (rank 0)."""

    after_checkpoints = True  # after RunCard, which writes the final card at the same event

    def __init__(self) -> None:
        self._destinations: tuple = ()

    def fit_start(self, state: State, logger: Logger) -> None:
        self._destinations = tuple(logger.destinations)  # record_failure gets no logger

    def fit_end(self, state: State, logger: Logger) -> None:
        self._upload(state)

    def record_failure(self, state: State, reason: str) -> None:
        self._upload(state)

    def _upload(self, state: State) -> None:
        from composer.loggers import MLFlowLogger, WandBLogger

        folder = next((cb.folder for cb in state.callbacks
                       if isinstance(cb, RunCard) and cb.folder), None)
        if folder is None or dist.get_global_rank() != 0:
            return
        files = [folder / CARD_JSON, folder / CARD_MD]
        if not all(f.is_file() for f in files):
            return
        for destination in self._destinations:
            if isinstance(destination, MLFlowLogger):
                _mlflow_upload(destination, files)
            elif isinstance(destination, WandBLogger):
                _wandb_upload(state.run_name, files)


def _mlflow_upload(destination, files: list[Path]) -> None:
    from mlflow import MlflowClient

    # Composer's MLFlowLogger keeps its run id private and has no artifact upload of its own
    run_id = getattr(destination, "_run_id", None)
    if run_id:
        client = MlflowClient(destination.tracking_uri)
        for path in files:
            client.log_artifact(run_id, str(path))


def _wandb_upload(run_name: str, files: list[Path]) -> None:
    import wandb

    if wandb.run is None:
        return
    artifact = wandb.Artifact(f"run_card-{run_name}", type="run_card")
    for path in files:
        artifact.add_file(str(path))
    wandb.run.log_artifact(artifact)
