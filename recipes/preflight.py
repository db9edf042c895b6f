"""Checks of a validated recipe against the file system, before torch or Composer load.

A usage error (no shards where ``data.path`` points, a save folder that is a file) then
answers in a second instead of after the imports, and names the key to fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from recipes.config import RecipeConfig
from recipes.fields import RecipeError

__all__ = ["check_recipe_paths", "shard_problem", "shard_samples"]


def shard_problem(path: str | Path, fmt: str) -> str | None:
    """Why ``path`` holds no readable ``fmt`` shards, or None (light: reads index.json only)."""
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a shard folder"
    folder = path / fmt if (path / fmt).is_dir() else path
    other = "wds" if fmt == "mds" else "mds"
    has_other = (path / other).is_dir() or (
        (path / "index.json").is_file() if other == "mds" else any(path.glob("*.tar")))
    hint = f"; it holds {other.upper()} shards: use data.format={other}" if has_other else ""
    if fmt == "wds":
        tars = sorted(folder.glob("*.tar"))
        if not tars:
            return f"{path} holds no WebDataset shards (no .tar files){hint}"
        unindexed = [t.name for t in tars if not t.with_suffix(".idx").is_file()]
        if unindexed:
            return (f"{path}: no DALI index for {unindexed[:3]}; create it with "
                    "`wds2idx TAR TAR.idx` or re-run `vtp shard`")
        return None
    index = folder / "index.json"
    if not index.is_file():
        return f"{path} is not a shard folder: no mds/index.json (make one with `vtp shard`){hint}"
    try:
        shards = json.loads(index.read_text()).get("shards")
        samples = sum(int(s.get("samples", 0)) for s in shards)
    except (ValueError, AttributeError, TypeError) as err:
        return f"{index} is not a valid MDS index ({err})"
    if not samples:
        return f"{path} holds no samples (its MDS index lists {len(shards)} shards)"
    return None


def shard_samples(path: str | Path, fmt: str) -> int:
    """Samples in a shard folder that :func:`shard_problem` accepted (from index files)."""
    path = Path(path)
    folder = path / fmt if (path / fmt).is_dir() else path
    if fmt == "mds":
        shards = json.loads((folder / "index.json").read_text())["shards"]
        return sum(int(s.get("samples", 0)) for s in shards)
    total = 0
    for idx in folder.glob("*.idx"):  # DALI's index: first line "v1.2 SAMPLES"
        with idx.open() as f:
            parts = f.readline().split()
        total += int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else 0
    return total


def filled(template: str, run_name: str | None) -> str:
    """A path template as Composer fills it for rank 0 (``{run_name}``, ``{rank}``); other
    fields are left as written."""
    values = {"run_name": run_name or "run", "rank": 0}
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), template)


def _writable_folder(path: Path) -> str | None:
    for folder in (path, *path.parents):
        if folder.exists():
            return None if folder.is_dir() else f"{folder} is a file, not a folder"
    return None


def check_recipe_paths(recipe: RecipeConfig) -> None:
    """Raises RecipeError naming the key when a path in the recipe cannot work."""
    data, trainer = recipe.data, recipe.trainer
    if not data.path and not data.remote:
        raise RecipeError("data.path is empty: pass data.path=SHARD_DIR (a `vtp shard` output)")
    if not data.remote:
        problem = shard_problem(data.path, data.format)
        if problem:
            raise RecipeError(f"data.path: {problem}")
    if trainer.save_folder:
        folder = Path(filled(trainer.save_folder, recipe.run_name))
        problem = _writable_folder(folder)
        if problem:
            raise RecipeError(f"trainer.save_folder={trainer.save_folder}: {problem}")
    for key in ("file", "tensorboard"):
        target = getattr(recipe.loggers, key)
        if target and "://" not in target:
            where = Path(filled(target, recipe.run_name))
            problem = _writable_folder(where if key == "tensorboard" else where.parent)
            if problem:
                raise RecipeError(f"loggers.{key}={target}: {problem}")
    load = trainer.load_path
    if load and "://" not in load and not Path(load).is_file():
        raise RecipeError(f"trainer.load_path={load} does not exist (or is not a file)")
