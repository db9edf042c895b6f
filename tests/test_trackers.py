"""MLflow and W&B through Composer's loggers, offline: metrics, the recipe and the run card
reach a local MLflow folder and an offline W&B run; nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import train_shards  # noqa: F401  (session fixture)

import recipes
import recipes.trackers
from commands.cli import main as vtp_main
from recipes.config import load_recipe
from recipes.fields import RecipeError

TINY = Path(recipes.__file__).parent / "tiny-synthetic.yaml"


def test_mlflow_and_wandb_offline(tmp_path, train_shards, monkeypatch):  # noqa: F811
    pytest.importorskip("mlflow", reason="the trackers extra is not installed")
    pytest.importorskip("wandb", reason="the trackers extra is not installed")
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    uri = (tmp_path / "mlruns").as_uri()
    code = vtp_main(["train", str(TINY), f"data.path={train_shards}",
                     "trainer.global_batch_size=4", "trainer.device_train_microbatch_size=4",
                     "trainer.max_duration=2ba", "trainer.save_interval=2ba",
                     f"trainer.save_folder={tmp_path}/ckpt", "trainer.autoresume=false",
                     "loggers.console=false", "loggers.progress_bar=false", "loggers.file=null",
                     "loggers.tensorboard=null", f"loggers.mlflow.tracking_uri={uri}",
                     "loggers.mlflow.experiment_name=vtp-test", "loggers.wandb.project=vtp-test",
                     "loggers.wandb.mode=offline"])
    assert code == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vtp-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert "loss/train/total" in run.data.metrics and "grad_norm/global" in run.data.metrics
    assert run.data.params["recipe.trainer.global_batch_size"] == "4"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run_card.json", "run_card.md"} <= artifacts
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((tmp_path / "wandb").iterdir())
    log = next(offline[0].glob("run-*.wandb")).read_bytes()
    assert b"loss/train/total" in log and b"run_card-tiny-synthetic" in log


def test_a_tracker_without_its_package_is_a_usage_error(monkeypatch, train_shards, capsys):  # noqa: F811
    monkeypatch.setattr(recipes.trackers.importlib.util, "find_spec", lambda name: None)
    recipe = load_recipe(TINY, ["loggers.wandb.project=x"])
    with pytest.raises(RecipeError, match=r"loggers.wandb needs the wandb package: pip install"):
        recipes.trackers.tracker_loggers(recipe)
    with pytest.raises(SystemExit) as exit_info:
        vtp_main(["train", str(TINY), f"data.path={train_shards}",
                  "loggers.mlflow.experiment_name=x", "trainer.autoresume=false",
                  "trainer.save_folder=null"])
    assert exit_info.value.code == 2
    assert "loggers.mlflow needs the mlflow package" in capsys.readouterr().err


def test_tracker_keys_are_checked():
    with pytest.raises(RecipeError, match="mode"):
        load_recipe(TINY, ["loggers.wandb.mode=cloud"])
    with pytest.raises(RecipeError, match="bogus"):
        load_recipe(TINY, ["loggers.mlflow.bogus=1"])
