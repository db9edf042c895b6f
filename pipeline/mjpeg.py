"""MJPEG clips as separate JPEG frames: read frame i without decoding frames 0..i-1.

DALI's video decoder walks forward through every frame between two requested ones (it only
seeks for leaps over 10 frames), so a 16x4 sample of an MJPEG clip decodes ~61 frames to
return 16. An MJPEG AVI is just a list of JPEG images; cutting out the requested ones and
decoding them with ``fn.decoders.image`` (libjpeg-turbo on the CPU, nvJPEG on a GPU) decodes
exactly the 16 frames.
"""

from __future__ import annotations

import struct

import numpy as np

VIDEO_CHUNKS = (b"dc", b"db")  # '00dc' compressed / '00db' uncompressed video chunks
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                         0xCE, 0xCF})  # frame headers (0xC4 DHT, 0xC8 JPG, 0xCC DAC are not)


def avi_chunks(data: bytes | np.ndarray) -> list[tuple[int, int]]:
    """(offset, size) of every video frame in an AVI's ``movi`` list, in stream order.

    Args:
        data: the AVI file's bytes.

    Raises:
        ValueError: when the bytes are not a RIFF AVI with a movi list.
    """
    buf = memoryview(data).cast("B")
    if bytes(buf[:4]) != b"RIFF" or bytes(buf[8:12]) != b"AVI ":
        raise ValueError("not a RIFF AVI")
    start = bytes(buf).find(b"movi")
    if start < 0:
        raise ValueError("AVI without a movi list")
    chunks, pos, end = [], start + 4, len(buf)
    while pos + 8 <= end:
        fourcc = bytes(buf[pos:pos + 4])
        size = struct.unpack_from("<I", buf, pos + 4)[0]
        if fourcc == b"LIST":  # 'rec ' groups: step inside
            pos += 12
            continue
        if fourcc == b"idx1" or pos + 8 + size > end:
            break
        if fourcc[2:] in VIDEO_CHUNKS:
            chunks.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    return chunks


def is_whole_jpeg(frame: np.ndarray) -> bool:
    """True when ``frame`` has a JPEG's structure: start-of-image, a chain of marker segments
    that stays inside the frame and reaches a frame header and start-of-scan, and end-of-image.

    DALI 2.4's image decoder can segfault the process once a decode has failed in it, so frames
    that are cut short or overwritten are turned away before they reach it. The entropy-coded
    data is not checked: libjpeg-turbo decodes damaged data there without failing.
    """
    data = frame.tobytes() if isinstance(frame, np.ndarray) else bytes(frame)
    tail = data.rstrip(b"\0")  # some muxers pad a frame with zeros
    if not (data.startswith(b"\xff\xd8") and tail.endswith(b"\xff\xd9")):
        return False
    pos, frame_header = 2, False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return frame_header
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2 or pos + 2 + length > len(data):
            return False
        frame_header |= marker in SOF_MARKERS
        pos += 2 + length
    return False


def avi_frame_rate(data: bytes | np.ndarray) -> float:
    """Frames per second of the AVI's first video stream (its ``strh`` rate / scale).

    Raises:
        ValueError: when there is no video stream header or its rate is zero.
    """
    buf = bytes(memoryview(data).cast("B")[:65536])  # headers precede the movi list
    pos = buf.find(b"strh")
    while pos >= 0 and pos + 8 + 28 <= len(buf):
        body = pos + 8
        if buf[body:body + 4] == b"vids":
            scale, rate = struct.unpack_from("<II", buf, body + 20)
            if scale and rate:
                return rate / scale
            break
        pos = buf.find(b"strh", pos + 4)
    raise ValueError("AVI without a video stream header (strh vids) giving its frame rate")


def jpeg_frames(data: np.ndarray, indices: np.ndarray) -> list[np.ndarray] | None:
    """The JPEG bytes of frames ``indices`` (views, no copy), or None if the AVI can't be cut.

    Args:
        data: the AVI as a uint8 array.
        indices: frame indices to cut out.
    """
    try:
        chunks = avi_chunks(data)
    except ValueError:
        return None
    if not chunks or int(np.max(indices)) >= len(chunks):
        return None
    return [data[offset:offset + size] for offset, size in (chunks[int(i)] for i in indices)]
