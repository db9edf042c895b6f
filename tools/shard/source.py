"""What an input file really is, before ffmpeg is let near it.

Scraped corpora name files by what they were meant to be: an AVI, a WebM or an MPEG-TS saved
as ``.mp4``, an HTML error page, a PNG thumbnail, an HLS playlist. The container is sniffed
from the first bytes and ffmpeg is then told that demuxer (``-f``), but only when it is one
of the self-contained ones: hls, concat, image2 and the other demuxers that open further
files are never chosen, whatever the file says. Each refusal says what the file is.

An mp4 whose top-level boxes run past the end of the file was cut short (a killed download):
with the index first (faststart) ffmpeg would happily decode the part that is there.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 512
# Demuxers that read their media from this one file only (mov follows external data
# references only with `enable_drefs`, which stays off).
SELF_CONTAINED = ("mov", "matroska", "avi", "mpegts", "flv", "ogg", "asf", "mpeg")
MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp")
NAMES = {"mov": "mp4", "matroska": "matroska/webm", "avi": "avi", "mpegts": "mpeg-ts",
         "flv": "flv", "ogg": "ogg", "asf": "asf/wmv", "mpeg": "mpeg-ps"}


class SourceError(RuntimeError):
    """The input is not a video we read; the message says what it is."""


@dataclass(frozen=True)
class Source:
    """A sniffed and probed input.

    Args:
        demuxer: the ffmpeg demuxer forced for it (one of ``SELF_CONTAINED``).
        duration: seconds of video the container declares (None when it declares none).
    """

    demuxer: str
    duration: float | None


def _refused(head: bytes) -> str | None:
    """Why a file with these first bytes is refused, or None if it may be a container."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"#extm3u"):
        return "HLS playlist: refused, playlists reference other files"
    if text.startswith(b"ffconcat"):
        return "ffconcat list: refused, concat lists reference other files"
    if text.startswith((b"<?xml", b"<mpd")) and b"<mpd" in text:
        return "DASH manifest: refused, manifests reference other files"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "HTML page, not a video (a failed download?)"
    if text.startswith(b"v=0"):
        return "SDP description: refused, it points at network streams"
    images = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
    for magic, name in images.items():
        if head.startswith(magic):
            return f"{name} image, not a video"
    if head.startswith(b"RIFF") and head[8:12] in (b"WAVE", b"WEBP"):
        return "WAV audio, not a video" if head[8:12] == b"WAVE" else "WebP image, not a video"
    mpeg_sync = len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
    if head.startswith((b"ID3", b"fLaC")) or mpeg_sync:
        return "audio only: an MP3/FLAC/AAC audio file, no video stream"
    return None


def _demuxer(head: bytes) -> str | None:
    if head[4:8] in MP4_BOXES:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head[:1] == b"\x47" and (len(head) <= 188 or head[188] == 0x47):
        return "mpegts"
    if head[4:5] == b"\x47" and (len(head) <= 196 or head[196] == 0x47):  # M2TS (192-byte packets)
        return "mpegts"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "asf"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"
    return None


def sniff(path: Path) -> str:
    """The self-contained demuxer that matches the content of ``path``.

    Raises:
        SourceError: empty, a playlist or list of other files, an image, audio, a web page,
            an mp4 cut short, or no container we know.
    """
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        raise SourceError("empty file: 0 bytes")
    reason = _refused(head)
    if reason:
        raise SourceError(reason)
    demuxer = _demuxer(head)
    if demuxer is None:
        printable = all(32 <= b < 127 or b in b"\t\r\n" for b in head[:64])
        shown = repr(head[:24].decode("ascii", "replace")) if printable else head[:8].hex(" ")
        kind = "text file" if printable else "unknown format"
        raise SourceError(f"{kind}, not a video: starts with {shown}, no known container")
    return demuxer


def _boxes(f, start: int, end: int):
    """(type, payload start, box end) of the boxes in ``[start, end)`` of an open mp4."""
    offset = start
    while offset + 8 <= end:
        f.seek(offset)
        header = f.read(16)
        size, kind, payload = int.from_bytes(header[:4], "big"), header[4:8], offset + 8
        if size == 1 and len(header) == 16:
            size, payload = int.from_bytes(header[8:16], "big"), offset + 16
        elif size == 0:  # "runs to the end of the file"
            size = end - offset
        yield kind, payload, offset + size, size
        offset += max(size, 8)


def check_mp4_boxes(path: Path) -> tuple[int, int] | None:
    """Walks the top-level mp4 boxes; a box that runs past the end means the file was cut.

    Returns:
        (payload start, end) of the ``moov`` box, or None for a fragmented mp4.

    Raises:
        SourceError: ``mp4 truncated: ...`` or ``mp4 damaged: ...``.
    """
    size, seen, moov = path.stat().st_size, [], None
    with open(path, "rb") as f:
        for kind, payload, end, box in _boxes(f, 0, size):
            if box < 8:
                raise SourceError(f"mp4 damaged: box {kind!r} at byte {end - box} has size {box}")
            if end > size:
                raise SourceError(f"mp4 truncated: the file ends at byte {size}, inside its "
                                  f"{kind.decode('latin-1')!r} box, which needs {end}")
            seen.append(kind)
            moov = (payload, end) if kind == b"moov" else moov
    if moov is None and b"moof" not in seen:
        raise SourceError("mp4 truncated or incomplete: no 'moov' index (boxes: "
                          f"{', '.join(k.decode('latin-1') for k in seen[:6])})")
    return moov


def mp4_tracks(path: Path, moov: tuple[int, int]) -> list[tuple[bytes, float | None]]:
    """(handler type, media seconds) of every track in the ``moov`` box: ``b"vide"`` for
    video, ``b"soun"`` for audio. Read from the boxes, without starting ffprobe."""
    tracks = []
    with open(path, "rb") as f:
        for kind, payload, end, _ in list(_boxes(f, *moov)):
            if kind != b"trak":
                continue
            mdia = next(((p, e) for k, p, e, _ in _boxes(f, payload, end) if k == b"mdia"), None)
            if mdia is None:
                continue
            handler, seconds = b"", None
            for child, start, _, _ in list(_boxes(f, *mdia)):
                f.seek(start)
                if child == b"hdlr":
                    handler = f.read(12)[8:12]
                elif child == b"mdhd":
                    head = f.read(36)
                    timescale, duration = ((head[12:16], head[16:20]) if head[0] == 0
                                           else (head[20:24], head[24:32]))
                    scale = int.from_bytes(timescale, "big")
                    seconds = _seconds(int.from_bytes(duration, "big") / scale) if scale else None
            tracks.append((handler, seconds))
    return tracks


def _probe_json(path: Path, demuxer: str, timeout: float) -> dict:
    command = ["ffprobe", "-v", "error", "-f", demuxer, "-protocol_whitelist", "file",
               "-show_entries", "format=duration:stream=codec_type,duration", "-of", "json",
               f"file:{Path(path).absolute()}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise SourceError(f"ffprobe: timed out after {timeout:.0f} s") from err
    if result.returncode != 0:
        raise SourceError(f"{NAMES[demuxer]} unreadable: {ffmpeg_message(result.stderr, path)}")
    return json.loads(result.stdout or "{}")


def ffmpeg_message(stderr: str, path: Path | None = None) -> str:
    """ffmpeg's error lines joined into one, without the long path prefix."""
    # "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c4a] moov atom not found": the address is noise.
    lines = [re.sub(r" @ 0x[0-9a-f]+\]", "]", line.strip()) for line in stderr.splitlines()
             if line.strip()]
    text = "; ".join(dict.fromkeys(lines)) or "no message"
    if path is not None:
        text = text.replace(f"file:{Path(path).absolute()}: ", "")
    return text[:500]


def _seconds(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def inspect(path: Path, start: float = 0.0, timeout: float = 600.0) -> Source:
    """Sniffs ``path``, then asks ffprobe (forced to that demuxer) what it declares.

    Raises:
        SourceError: what the file is when it is not a video we read, or a window start past
            its end.
    """
    demuxer = sniff(path)
    moov = check_mp4_boxes(path) if demuxer == "mov" else None
    tracks = mp4_tracks(path, moov) if moov else []
    if tracks:  # an mp4 declares all we need in its boxes: no ffprobe process
        kinds = {b"vide": "video", b"soun": "audio"}
        streams = [{"codec_type": kinds.get(handler, ""), "duration": seconds}
                   for handler, seconds in tracks]
        info = {"streams": streams}
    else:
        info = _probe_json(path, demuxer, timeout)
        streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    if not video:
        if any(s.get("codec_type") == "audio" for s in streams):
            raise SourceError("audio only: no video stream")
        raise SourceError(f"{NAMES[demuxer]} without a video stream")
    duration = (_seconds(video[0].get("duration"))
                or _seconds(info.get("format", {}).get("duration")))
    if duration is not None and start >= duration:
        raise SourceError(f"start {start:g} s is past the clip's end ({duration:.1f} s)")
    return Source(demuxer, duration)


def short_decode(frames: int, fps: float, source: Source, start: float,
                 max_seconds: float | None) -> str | None:
    """Why an output of ``frames`` at ``fps`` is too short for what the source declares, or
    None. A decoder stops quietly where a file was cut, so the count is the evidence."""
    if source.duration is None or fps <= 0:
        return None
    expected = source.duration - start
    if max_seconds is not None:
        expected = min(expected, max_seconds)
    got = frames / fps
    # Container durations round, and audio or an edit list can stretch them a little.
    if got >= 0.9 * expected - 2 / fps:
        return None
    return (f"{NAMES[source.demuxer]} truncated: decoded {frames} frames ({got:.1f} s) where "
            f"the container declares {expected:.1f} s")
