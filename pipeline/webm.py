"""VP8/VP9 frames out of a WebM (Matroska) clip, so a sample's frames reach DALI as a short IVF.

DALI 2.4's CPU video decoder does not seek in an in-memory clip: it decodes every frame from
the first to the last requested one. Reading the frame list from the container (no decoding:
a walk over EBML elements) gives each frame's bytes and key flag; the frames from the key
frame before a window to its last frame, written as IVF (pipeline/ivf.py), decode to the same
pictures. Only the elements on the path to the blocks are read; anything unexpected makes
``frames`` raise ValueError and the caller falls back to decoding the whole clip.
"""

from __future__ import annotations

import struct

import numpy as np

from pipeline.ivf import FRAME_HEADER, HEADER

EBML = 0x1A45DFA3
SEGMENT, CLUSTER, TRACKS, TRACK_ENTRY, CODEC_ID = 0x18538067, 0x1F43B675, 0x1654AE6B, 0xAE, 0x86
SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, REFERENCE_BLOCK = 0xA3, 0xA0, 0xA1, 0xFB
VIDEO, PIXEL_WIDTH, PIXEL_HEIGHT = 0xE0, 0xB0, 0xBA
FOURCC = {"V_VP9": b"VP90", "V_VP8": b"VP80"}


def is_webm(data: bytes | np.ndarray) -> bool:
    return bytes(memoryview(data).cast("B")[:4]) == EBML.to_bytes(4, "big")


def _vint(buf: memoryview, pos: int, keep_marker: bool) -> tuple[int, int]:
    """(value, length) of the EBML variable-length integer at ``pos``."""
    if pos >= len(buf) or buf[pos] == 0:
        raise ValueError(f"bad EBML integer at byte {pos}")
    first, length = buf[pos], 1
    while not first & (0x80 >> (length - 1)):
        length += 1
    value = first if keep_marker else first & (0xFF >> length)
    for byte in buf[pos + 1:pos + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = -1  # unknown size (live-streamed segments and clusters)
    return value, length


def _elements(buf: memoryview, start: int, end: int):
    """(id, data start, data end) of each element between ``start`` and ``end``."""
    pos = start
    while pos < end:
        ident, id_len = _vint(buf, pos, True)
        size, size_len = _vint(buf, pos + id_len, False)
        body = pos + id_len + size_len
        stop = end if size < 0 else body + size
        if stop > len(buf):
            raise ValueError("element runs past the end of the clip")
        yield ident, body, stop
        pos = stop


def _block(buf: memoryview, body: int, end: int) -> tuple[int, int, int]:
    """(track, frame offset, frame size) of a (Simple)Block without lacing."""
    track, length = _vint(buf, body, False)
    flags = buf[body + length + 2]
    if flags & 0x06:
        raise ValueError("laced blocks are not used for video")
    start = body + length + 3
    return track, start, end - start


def _uint(buf: memoryview, body: int, end: int) -> int:
    return int.from_bytes(bytes(buf[body:end]), "big")


def _track(buf: memoryview, body: int, end: int) -> tuple[bytes | None, int, int]:
    """(IVF fourcc or None, width, height) of a TrackEntry."""
    parts = {i: (b, e) for i, b, e in _elements(buf, body, end)}
    codec = (bytes(buf[slice(*parts[CODEC_ID])]).decode(errors="replace")
             if CODEC_ID in parts else "")
    video = {i: (b, e) for i, b, e in _elements(buf, *parts[VIDEO])} if VIDEO in parts else {}
    if PIXEL_WIDTH not in video or PIXEL_HEIGHT not in video:
        raise ValueError("WebM track without its picture size")
    return (FOURCC.get(codec), _uint(buf, *video[PIXEL_WIDTH]), _uint(buf, *video[PIXEL_HEIGHT]))


def frames(data: bytes | np.ndarray) -> tuple[tuple[bytes, int, int], list[tuple[int, int, bool]]]:
    """The video track's (IVF fourcc, width, height) and its frames: (offset, size, key
    frame), in order.

    Raises:
        ValueError: not a WebM with one VP8/VP9 track of unlaced blocks.
    """
    buf = memoryview(data).cast("B")
    if not is_webm(buf):
        raise ValueError("not a WebM clip")
    top = list(_elements(buf, 0, len(buf)))
    segment = next(((b, e) for i, b, e in top if i == SEGMENT), None)
    if segment is None:
        raise ValueError("WebM without a segment")
    track, out = None, []
    for ident, body, end in _elements(buf, *segment):
        if ident == TRACKS:
            entries = [(b, e) for i, b, e in _elements(buf, body, end) if i == TRACK_ENTRY]
            if len(entries) != 1:
                raise ValueError("WebM with other than one track")
            track = _track(buf, *entries[0])
        elif ident == CLUSTER:
            for kind, b, e in _elements(buf, body, end):
                if kind == SIMPLE_BLOCK:
                    _, offset, size = _block(buf, b, e)
                    out.append((offset, size, bool(buf[b + _vint(buf, b, False)[1] + 2] & 0x80)))
                elif kind == BLOCK_GROUP:
                    parts = {i: (pb, pe) for i, pb, pe in _elements(buf, b, e)}
                    if BLOCK in parts:
                        _, offset, size = _block(buf, *parts[BLOCK])
                        out.append((offset, size, REFERENCE_BLOCK not in parts))
    if track is None or track[0] is None:
        raise ValueError("WebM whose track is not VP8 or VP9")
    return track, out


def cut_to_ivf(data: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """An IVF of the frames from the key frame before ``min(indices)`` to ``max(indices)``,
    and the indices renumbered into it; None when the clip cannot be cut this way.

    Args:
        data: the WebM clip as uint8.
        indices: sorted frame indices a sample needs.
    """
    try:
        (fourcc, width, height), found = frames(data)
    except (ValueError, IndexError):
        return None
    first, last = int(np.min(indices)), int(np.max(indices))
    if last >= len(found):
        return None
    start = next((i for i in range(first, -1, -1) if found[i][2]), None)
    if start is None:
        return None
    chosen = found[start:last + 1]
    out = np.empty(HEADER + sum(FRAME_HEADER + size for _, size, _ in chosen), np.uint8)
    # time base 1/25 and one tick per frame: DALI counts frames, the rate is not used
    struct.pack_into("<4sHH4sHHIIII", out, 0, b"DKIF", 0, HEADER, fourcc, width, height,
                     25, 1, len(chosen), 0)
    pos = HEADER
    for index, (offset, size, _) in enumerate(chosen):
        struct.pack_into("<IQ", out, pos, size, index)
        out[pos + FRAME_HEADER:pos + FRAME_HEADER + size] = data[offset:offset + size]
        pos += FRAME_HEADER + size
    return out, (indices - start).astype(np.int32)
