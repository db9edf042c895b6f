"""Output folders of the data tools: a path that is a file, or that cannot be made, is the
user's mistake (a usage error naming it), never a traceback."""

from __future__ import annotations

from pathlib import Path


class OutputFolderError(ValueError):
    """An output path is a file or cannot be made into a folder."""


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Refuses ``path`` when it exists and is not a folder (nothing is written).

    Raises:
        OutputFolderError: naming ``flag`` and ``path``.
    """
    if path.exists() and not path.is_dir():
        raise OutputFolderError(f"{flag} {path} is a file, not a folder")


def make_output_folder(path: Path, flag: str = "--out") -> Path:
    """`check_output_folder`, then makes ``path`` (and its parents) if needed.

    Raises:
        OutputFolderError: naming ``flag``, ``path`` and what went wrong.
    """
    check_output_folder(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputFolderError(f"{flag} {path} cannot be made: {err.strerror or err}") from err
    return path
