"""Streaming's shared memory that crashed runs left behind, removed without touching live runs.

A StreamingDataset registers a numbered prefix and a few named blocks under it in /dev/shm
(``000042_barrier``, ``000042_shard_states``, ...). A run killed hard leaves them there, and
Streaming's own ``clean_stale_shared_memory`` unlinks every block it finds, live ones
included: a second training on the same machine (`vtp experiment --jobs 2`, two jobs on one
node) would lose blocks it re-opens by name, or see its prefix taken twice. Here a prefix
counts as leaked only when no process maps any of its blocks (Linux lists each process's
mappings in /proc/PID/maps); without /proc nothing is removed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SHM = Path("/dev/shm")


def _pattern() -> re.Pattern:
    from streaming.base.constant import SHM_TO_CLEAN

    names = "|".join(map(re.escape, SHM_TO_CLEAN))
    return re.compile(rf"(\d{{6}})_(?:{names})")


def mapped_prefixes(root: Path = SHM) -> set[str] | None:
    """Streaming prefixes of which some block under ``root`` is mapped by a live process
    (None where /proc cannot tell)."""
    if not Path("/proc/self/maps").is_file():
        return None
    pattern, marker, live = _pattern(), f"{root}/", set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "maps").read_text()
        except OSError:  # exited meanwhile, or another user's (it cannot map our 0600 blocks)
            continue
        for line in text.splitlines():
            _, found, name = line.partition(marker)
            match = pattern.fullmatch(name.split(" (deleted)")[0].strip()) if found else None
            if match:
                live.add(match[1])
    return live


def clean_leaked_shared_memory(root: Path = SHM) -> list[str]:
    """Unlinks the blocks of every Streaming prefix under ``root`` that no process maps;
    returns their names."""
    pattern, prefixes = _pattern(), {}
    for path in root.iterdir() if root.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match:
            prefixes.setdefault(match[1], []).append(path)
    live = mapped_prefixes(root) if prefixes else set()
    if live is None:
        return []
    removed = []
    for prefix, paths in sorted(prefixes.items()):
        if prefix in live:
            continue
        for path in paths:
            try:
                path.unlink()
                removed.append(path.name)
            except (FileNotFoundError, PermissionError):  # gone meanwhile, or not ours
                pass
    return removed
