"""VP9 in IVF: cut a clip down to the frames a sample needs before DALI decodes it.

DALI 2.4's CPU video decoder does not seek in an in-memory clip: it decodes from the first
frame up to the last requested one, so a window near the end of a WebM clip costs the whole
clip. IVF is a 32-byte file header followed by frames, each behind a 12-byte header, so the
frames from the key frame before a window to its last frame form a valid IVF of their own:
DALI then decodes only those (`vtp shard --codec vp9-ivf`).
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"DKIF"
HEADER = 32
FRAME_HEADER = 12


def is_ivf(data: bytes | np.ndarray) -> bool:
    return bytes(memoryview(data).cast("B")[:4]) == MAGIC


def ivf_frames(data: bytes | np.ndarray) -> list[tuple[int, int]]:
    """(offset, size) of every frame record (its 12-byte header included), in file order.

    Raises:
        ValueError: the bytes are not an IVF file.
    """
    buf = memoryview(data).cast("B")
    if bytes(buf[:4]) != MAGIC or len(buf) < HEADER:
        raise ValueError("not an IVF file")
    header_size = struct.unpack_from("<H", buf, 6)[0] or HEADER
    frames, pos = [], header_size
    while pos + FRAME_HEADER <= len(buf):
        size = struct.unpack_from("<I", buf, pos)[0]
        if pos + FRAME_HEADER + size > len(buf):
            break  # a cut-off last frame is left to the decoder's own check
        frames.append((pos, FRAME_HEADER + size))
        pos += FRAME_HEADER + size
    return frames


def is_vp9_key_frame(first_byte: int) -> bool:
    """From the first byte of a VP9 uncompressed header: a shown key frame."""
    if first_byte >> 6 != 2:  # frame_marker
        return False
    profile = ((first_byte >> 5) & 1) | (((first_byte >> 4) & 1) << 1)
    shift = 1 if profile == 3 else 0  # profile 3 has a reserved bit first
    show_existing = (first_byte >> (3 - shift)) & 1
    frame_type = (first_byte >> (2 - shift)) & 1
    return not show_existing and frame_type == 0


def key_frames(data: bytes | np.ndarray) -> list[int]:
    """Indices of the VP9 key frames of an IVF clip (read from frame headers, not decoded)."""
    buf = memoryview(data).cast("B")
    return [i for i, (offset, size) in enumerate(ivf_frames(data))
            if size > FRAME_HEADER and is_vp9_key_frame(buf[offset + FRAME_HEADER])]


def cut(data: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The IVF holding frames from the key frame before ``min(indices)`` to ``max(indices)``,
    and the indices renumbered into it; None when the clip cannot be cut (then DALI decodes
    the whole clip, as for any other container).

    Args:
        data: the IVF clip as uint8.
        indices: sorted frame indices a sample needs.
    """
    try:
        frames = ivf_frames(data)
    except ValueError:
        return None
    first, last = int(np.min(indices)), int(np.max(indices))
    if not frames or last >= len(frames):
        return None
    buf = memoryview(data).cast("B")
    start = next((i for i in range(first, -1, -1) if frames[i][1] > FRAME_HEADER
                  and is_vp9_key_frame(buf[frames[i][0] + FRAME_HEADER])), None)
    if start is None:
        return None
    header = np.array(data[:frames[0][0]], copy=True)
    struct.pack_into("<I", header, 24, last - start + 1)  # frame count
    begin, end = frames[start][0], frames[last][0] + frames[last][1]
    return np.concatenate([header, data[begin:end]]), (indices - start).astype(np.int32)
