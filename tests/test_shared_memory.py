"""Leaked Streaming shared memory is removed; a live run's is not."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from pipeline.shared_memory import clean_leaked_shared_memory, mapped_prefixes

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").is_file(),
                                reason="needs /proc to tell live shared memory from leaked")


def _block(root: Path, name: str) -> Path:
    path = root / name
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    return path


def test_only_prefixes_no_process_maps_are_removed(tmp_path):
    live = _block(tmp_path, "000001_barrier")
    live_unmapped = _block(tmp_path, "000001_locals")  # Streaming closes this one early
    leaked = [_block(tmp_path, "000002_barrier"), _block(tmp_path, "000002_shard_states")]
    other = _block(tmp_path, "000003_not_streaming")
    with live.open("r+b") as f, mmap.mmap(f.fileno(), 0):  # what a running dataset holds
        assert mapped_prefixes(tmp_path) == {"000001"}
        removed = clean_leaked_shared_memory(tmp_path)
        assert sorted(removed) == ["000002_barrier", "000002_shard_states"]
        assert live.exists() and live_unmapped.exists() and other.exists()
        assert not any(path.exists() for path in leaked)
    assert sorted(clean_leaked_shared_memory(tmp_path)) == ["000001_barrier", "000001_locals"]


def test_a_live_streaming_dataset_keeps_its_shared_memory(tmp_path):
    from streaming.base.shared.memory import SharedMemory

    name = "999990_barrier"  # far above the prefixes real datasets take
    block = SharedMemory(name=name, create=True, size=8)
    try:
        clean_leaked_shared_memory()
        assert (Path("/dev/shm") / name).exists()
    finally:
        block.cleanup()
    _block(Path("/dev/shm"), name)  # as a killed run leaves it: nobody maps it
    assert name in clean_leaked_shared_memory()
    assert not (Path("/dev/shm") / name).exists()
