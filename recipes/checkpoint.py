"""Read the model back out of a Composer training checkpoint (for evaluation and export).

Composer saves the adapter's state dict, whose keys start with ``model.`` and whose
``_extra_state`` holds the ModelConfig (see ``VTPComposerModel.get_extra_state``), so a
checkpoint is enough to rebuild the trained :class:`model.UnifiedMAE`.

Checkpoints are files users hand us, so they are read with torch's weights-only unpickler,
which builds tensors and plain data and never calls code named in the file. Composer adds a
few plain types to that (timestamps, numpy RNG state, torch's version string), allowed here
by name; a file that needs anything else is refused (vtp never unpickles code).
"""

from __future__ import annotations

import datetime
import pickle
import re
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.torch_version import TorchVersion

from model import ModelConfig, UnifiedMAE
from recipes.data_settings import DataSettings

__all__ = ["CheckpointError", "read_checkpoint", "load_trained_model", "load_data_settings",
           "checkpoint_batches", "check_checkpoints_to_load"]

# What a Composer 0.32 checkpoint holds besides tensors and builtins: wall-clock timedeltas,
# numpy arrays of the RNG states, and torch.__version__. None of them runs code when built.
COMPOSER_SAFE_GLOBALS = [
    datetime.timedelta, TorchVersion, np.ndarray, np.dtype, np.ndarray((0,)).__reduce__()[0],
    *(type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32, np.uint8)),
]


class CheckpointError(ValueError):
    """A checkpoint cannot be read: damaged, not a checkpoint, or unsafe to unpickle."""


def _unsafe_detail(message: str) -> str | None:
    """What a weights-only refusal objected to, or None when the failure is something else."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it needs the Python object {found.group(1)}"
    found = re.search(r"Unsupported operand (\S+)", message)
    if found or "Unsupported class" in message or "Trying to call reduce" in message:
        return "it calls code while unpickling"
    return None


UNPICKLE_ADVICE = ("vtp never unpickles code from a file; if you trust where it came from, "
                   "convert it yourself to a state dict of tensors (or safetensors)")


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint at ``path`` as a dict, loaded without running code from it.

    Args:
        path: a ``torch.save`` file (a Composer checkpoint, usually).
        mmap: map tensor storage instead of reading it (for a check that needs no weights).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or holds objects that only
            full unpickling could build (the message says how to convert it knowingly).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):  # torch.save and Composer write zip archives
        raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint (no zip "
                              "archive directory at its end)")
    try:
        with torch.serialization.safe_globals(COMPOSER_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        detail = _unsafe_detail(str(err))
        if detail is None:
            raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                                  f"({_first_line(err)})") from err
        raise CheckpointError(
            f"checkpoint {path} was not loaded: {detail}, and building it could run code from "
            f"the file (a weights-only load refuses it). {UNPICKLE_ADVICE}") from err
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for damaged files
        why = _first_line(err) if str(err).strip() else "the file ends too early"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(err).__name__}: {why})") from err


def check_checkpoints_to_load(recipe, rank: int = 0) -> None:
    """Reads the checkpoint a training run would load (``trainer.load_path``, or autoresume's
    latest in ``trainer.save_folder``) with the weights-only loader: Composer itself unpickles
    with code execution allowed, so a file that would need that is refused here first.

    Args:
        recipe: a validated :class:`recipes.config.RecipeConfig`.
        rank: this process's rank (autoresume reads ``latest-rank{rank}.pt``).

    Raises:
        RecipeError: naming the file and why it was refused.
    """
    from recipes.fields import RecipeError
    from recipes.preflight import filled

    t = recipe.trainer
    paths = [t.load_path] if t.load_path and "://" not in t.load_path else []
    if t.autoresume and t.save_folder and "://" not in t.save_folder:
        folder = Path(filled(t.save_folder, recipe.run_name))
        paths.insert(0, str(folder / f"latest-rank{rank}.pt"))
    for path in paths:
        if Path(path).is_file():
            try:
                checkpoint = read_checkpoint(path, mmap=True)
            except CheckpointError as err:
                raise RecipeError(str(err)) from err
            _check_optimizer(checkpoint, path, recipe.optimizer.name)


def _check_optimizer(checkpoint: dict, path: str, name: str) -> None:
    """Refuses to resume Adam's moments into another optimizer class: Composer would drop
    them with a warning and go on from zero at the scheduled learning rate."""
    from recipes.fields import RecipeError
    from recipes.optim import OPTIMIZER_CLASSES

    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    saved = state.get("optimizers") if isinstance(state, dict) else None
    wanted = OPTIMIZER_CLASSES[name].__name__
    if isinstance(saved, dict) and saved and wanted not in saved:
        known = {cls.__name__: key for key, cls in OPTIMIZER_CLASSES.items()}
        had = ", ".join(sorted(saved))
        hint = f"; resume it with optimizer.name={known[had]}" if had in known else ""
        raise RecipeError(f"{path} holds the state of optimizer {had}, but optimizer.name="
                          f"{name} builds {wanted}: its moments would restart from zero{hint}")


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _model_state(checkpoint: dict) -> dict | None:
    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    model = state.get("model") if isinstance(state, dict) else None
    return model if isinstance(model, dict) else None


def _extra_state(checkpoint: dict) -> dict:
    return (_model_state(checkpoint) or {}).get("_extra_state") or {}


def checkpoint_batches(checkpoint: dict) -> int | None:
    """The batches a Composer checkpoint had trained, or None when it does not say."""
    state = checkpoint.get("state") if isinstance(checkpoint, dict) else None
    stamp = (state or {}).get("timestamp") if isinstance(state, dict) else None
    batch = (stamp or {}).get("Timestamp", {}).get("batch") if isinstance(stamp, dict) else None
    return int(batch) if isinstance(batch, int) else None


def load_data_settings(path: str | Path, checkpoint: dict | None = None) -> dict:
    """The checkpoint's :class:`DataSettings` as a dict, defaults filled in for settings an
    older checkpoint did not record. ``checkpoint`` is the already-read file, if the caller
    has it."""
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    return asdict(DataSettings.from_dict(_extra_state(checkpoint).get("data_settings") or {}))


def load_trained_model(path: str | Path, config: ModelConfig | None = None,
                       checkpoint: dict | None = None) -> UnifiedMAE:
    """The UnifiedMAE of a `vtp train` checkpoint, in eval mode, on the CPU.

    Args:
        path: a Composer checkpoint (``ep*-ba*-rank0.pt`` or ``latest-rank0.pt``).
        config: the model configuration, needed only for checkpoints that do not carry it.
        checkpoint: the already-read file, if the caller has it (``path`` then only names it).

    Raises:
        CheckpointError: the file is unreadable or unsafe (see :func:`read_checkpoint`), is not
            a training checkpoint, its weights do not fit its model, or it carries no
            configuration and none was given.
    """
    if checkpoint is None:
        checkpoint = read_checkpoint(path)
    state = _model_state(checkpoint)
    if state is None:
        raise CheckpointError(f"{path} is not a Composer training checkpoint (no state.model)")
    stored = (state.get("_extra_state") or {}).get("model_config")
    if config is None and stored is None:
        raise CheckpointError(f"{path} carries no model configuration; pass config=")
    try:
        net = UnifiedMAE(config or ModelConfig.from_dict(stored))
        weights = {k.removeprefix("model."): v for k, v in state.items() if k != "_extra_state"}
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the model it describes "
                              f"({_first_line(err)})") from err
    return net.eval()
