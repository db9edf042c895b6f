"""Which device a run uses: ``auto`` is the GPU when CUDA sees one, else the CPU."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(wanted: str, name: str = "device") -> str:
    """``cpu`` or ``gpu`` for ``wanted`` (``auto``, ``cpu`` or ``gpu``).

    Args:
        wanted: the setting.
        name: what the setting is called where the user wrote it, for the error.

    Raises:
        ValueError: ``gpu`` while no CUDA device is visible.
    """
    import torch  # `vtp` front ends import this module before they need torch

    if wanted == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if wanted == "gpu" and not torch.cuda.is_available():
        raise ValueError(f"{name}=gpu but no CUDA device is visible")
    return wanted
