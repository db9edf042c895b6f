"""The output folder of `vtp shard`: what may be written into, and where temporaries go.

A user's folder is never cleaned up by mistake: ``--out`` must be new, empty, or a folder an
earlier `vtp shard` run made (its ``settings.json`` says so). Scratch files live under a name
of ours, ``OUT/.vtp-tmp``, removed at the end of a run.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.folders import OutputFolderError, check_output_folder, make_output_folder

__all__ = ["OutputFolderError", "check_out", "prepare_out", "scratch_folder", "is_shard_run"]

SCRATCH = ".vtp-tmp"
SETTINGS = "settings.json"


def scratch_folder(out: Path) -> Path:
    """Where pool workers put their temporary files."""
    return out / SCRATCH


def is_shard_run(out: Path) -> bool:
    """True when ``out`` holds the settings of a `vtp shard` run (or a `vtp merge`)."""
    try:
        settings = json.loads((out / SETTINGS).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and "inputs_sha256" in settings


def check_out(out: Path) -> None:
    """Refuses a file or an unrelated non-empty folder as ``out`` (nothing is written).

    Raises:
        OutputFolderError: naming ``out`` and what is wrong with it.
    """
    check_output_folder(out)
    if out.is_dir() and any(out.iterdir()) and not is_shard_run(out):
        raise OutputFolderError(
            f"--out {out} is a non-empty folder that is not a `vtp shard` output (no "
            f"{SETTINGS} of ours); give a new or empty folder, or the folder of an earlier run")


def prepare_out(out: Path) -> None:
    """`check_out`, then makes ``out`` if needed.

    Raises:
        OutputFolderError: naming ``out`` and what is wrong with it.
    """
    check_out(out)
    make_output_folder(out)
