"""What a number was made with: code revision, package versions, hardware and data identity.

The run cards of `vtp train` and `vtp eval` (recipes/run_card.py) and `vtp doctor` read these;
each fact is gathered here once.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["git_state", "package_versions", "hardware", "data_identity", "sha256_file",
           "environment", "PACKAGES"]

# distribution name -> what a reader calls it
PACKAGES = {
    "torch": "torch", "mosaicml": "composer", "mosaicml-streaming": "streaming",
    "nvidia-dali-cuda120": "dali", "transformers": "transformers", "numpy": "numpy",
    "pyarrow": "pyarrow", "vtp": "vtp",
}
REPO = Path(__file__).resolve().parent.parent


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in chunks: checkpoints can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_state(repo: Path = REPO) -> dict:
    """``{"revision", "dirty"}`` of the code that runs; None values outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return {"revision": revision, "dirty": None if status is None else bool(status)}


def package_versions() -> dict:
    """Versions of Python, the stack's packages and ffmpeg (None where not installed)."""
    out = {"python": platform.python_version()}
    for dist, name in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["ffmpeg"] = _ffmpeg_version()
    return out


def _ffmpeg_version() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    try:
        first = subprocess.run([exe, "-version"], capture_output=True, text=True,
                               timeout=20).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return first[0].removeprefix("ffmpeg version ").split(" ")[0] if first else None


def hardware() -> dict:
    """Host, CPU cores (visible to this process), memory and GPUs with CUDA's version."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {"host": platform.node(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "memory_gib": memory, "gpus": gpus, "cuda": torch.version.cuda}


def environment() -> dict:
    """git, package versions and hardware in one dict (the shared part of every card)."""
    return {"git": git_state(), "packages": package_versions(), "hardware": hardware()}


def data_identity(path: str | Path, fmt: str = "mds") -> dict:
    """What a shard folder holds, by content: the shard index hash, the manifest's sha256 and
    the sample count.

    For MDS the index is ``mds/index.json``; for WebDataset it is the sorted list of tar names
    with their ``.idx`` files' bytes. ``manifest.parquet`` is `vtp shard`'s record of every
    input. Missing parts are None (a remote-only dataset has no local index yet).
    """
    root = Path(path)
    folder = root / fmt if (root / fmt).is_dir() else root
    out = {"path": str(root.resolve()) if root.exists() else str(root), "format": fmt,
           "index_sha256": None, "manifest_sha256": None, "samples": None}
    if fmt == "mds" and (folder / "index.json").is_file():
        index = folder / "index.json"
        out["index_sha256"] = sha256_file(index)
        shards = json.loads(index.read_text()).get("shards", [])
        out["samples"] = sum(int(s.get("samples", 0)) for s in shards)
    elif fmt == "wds" and folder.is_dir():
        digest, samples = hashlib.sha256(), 0
        for idx in sorted(folder.glob("*.idx")):
            data = idx.read_bytes()
            digest.update(idx.name.encode() + b"\0" + data)
            samples += max(len(data.splitlines()) - 1, 0)  # a "v1.2 N" header, then one per sample
        out["index_sha256"] = digest.hexdigest() if samples else None
        out["samples"] = samples or None
    manifest = root / "manifest.parquet"
    if manifest.is_file():
        out["manifest_sha256"] = sha256_file(manifest)
    return out
