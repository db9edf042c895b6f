"""Batch buffers written again once nothing refers to them any more.

A float32 batch of 8 clips x 16 frames x 224 px is 77 MB, above glibc's largest mmap threshold
(32 MB): every fresh one is new memory that the kernel zeroes page by page on the first write
(about 19k page faults). On a CPU that cost about as much as the batch's resize (measured in
benchmarks/RESULTS.md), so the decoder keeps its last few batches and writes the next one into a
buffer that no tensor refers to any more.

A buffer is handed out as a view: whatever holds the batch (the training step, the autograd
graph, a view of it) holds the buffer's storage, which is what "free" checks. A buffer moved
to shared memory (a DataLoader worker's batch sent to the main process) is never written again.
Not seen: a reference to the view's ``_base`` (the kept buffer itself). The counts in
`is_free` are CPython 3.11's and torch 2.7's (tests/test_buffers.py checks them); one
`BatchBuffers` serves one thread.
"""

from __future__ import annotations

import sys

import torch

# torch has no public storage reference count; without this one nothing is reused
_storage_refs = getattr(torch._C, "_storage_Use_Count", None)


def is_free(buffer: torch.Tensor) -> bool:
    """No tensor but ``buffer`` itself refers to its memory, which is not shared memory."""
    if _storage_refs is None or buffer.is_shared():
        return False
    storage = buffer.untyped_storage()
    # free: two references to the memory (``buffer`` and the storage object) and two to the
    # storage object (``storage`` and getrefcount's argument); torch keeps one storage object
    # per storage, so one that somebody else kept is this same object, with more references
    return _storage_refs(storage._cdata) == 2 and sys.getrefcount(storage) == 2


class BatchBuffers:
    """The last ``keep`` batch buffers, reused when free.

    Args:
        keep: buffers kept; the training loop holds one batch while the next is built, and a
            prefetching loader one more.
    """

    def __init__(self, keep: int = 3):
        self.keep = keep
        self._buffers: list[torch.Tensor] = []

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised ``shape`` tensor to write a whole batch into (a view of a buffer)."""
        shape = tuple(shape)
        for buffer in self._buffers:
            if tuple(buffer.shape) == shape and buffer.dtype == dtype and is_free(buffer):
                return buffer.view(shape)
        kept = [b for b in self._buffers if not b.is_shared()]
        self._buffers = kept[max(0, len(kept) - self.keep + 1):] + [torch.empty(shape, dtype=dtype)]
        return self._buffers[-1].view(shape)
