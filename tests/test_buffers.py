"""Batch buffers: reused only when nothing refers to them any more."""

from __future__ import annotations

import pytest
import torch

from pipeline.buffers import BatchBuffers, is_free

SHAPE = (2, 3, 4, 8, 8)


def test_a_dropped_batch_is_written_again_and_a_held_one_is_not():
    buffers = BatchBuffers()
    first = buffers.empty(SHAPE, torch.float32)
    address = first.data_ptr()
    held = buffers.empty(SHAPE, torch.float32)  # `first` is still held
    assert held.data_ptr() != address
    del first
    again = buffers.empty(SHAPE, torch.float32)
    assert again.data_ptr() == address and again.shape == SHAPE
    assert buffers.empty(SHAPE, torch.uint8).dtype == torch.uint8  # another dtype: new memory
    assert len(buffers._buffers) == 3


@pytest.mark.parametrize("holder", ["view", "numpy", "autograd", "storage"])
def test_anything_that_still_reads_the_batch_keeps_its_buffer(holder):
    buffers = BatchBuffers()
    batch = buffers.empty(SHAPE, torch.float32).fill_(1.0)
    address = batch.data_ptr()
    if holder == "view":
        kept = batch[0, :, 1]
    elif holder == "numpy":
        kept = batch.numpy()
    elif holder == "storage":
        kept = batch.untyped_storage()
    else:  # the graph saves the batch for the weight's gradient
        weight = torch.ones(SHAPE[-1], requires_grad=True)
        kept = (batch * weight).sum()
    del batch
    assert buffers.empty(SHAPE, torch.float32).data_ptr() != address
    if holder == "autograd":
        kept.backward()
        assert torch.equal(weight.grad, torch.full((SHAPE[-1],), 2.0 * 3 * 4 * 8))
    del kept
    assert buffers.empty(SHAPE, torch.float32).data_ptr() == address


def test_a_batch_moved_to_shared_memory_is_never_written_again():
    buffers = BatchBuffers()
    batch = buffers.empty(SHAPE, torch.float32)
    batch.share_memory_()  # what a DataLoader worker's batch goes through
    address = batch.data_ptr()
    del batch
    assert buffers.empty(SHAPE, torch.float32).data_ptr() != address
    assert not any(buffer.is_shared() for buffer in buffers._buffers)


def test_at_most_keep_buffers_are_kept():
    buffers = BatchBuffers(keep=1)
    held = [buffers.empty(SHAPE, torch.float32) for _ in range(4)]
    assert len(buffers._buffers) == 1 and len({b.data_ptr() for b in held}) == 4
    assert is_free(torch.empty(3)) and not is_free(torch.empty(3).share_memory_())
