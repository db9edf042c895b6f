"""Hostile input: playlists and concat lists disguised as mp4, path escapes, odd file names,
remote URLs. The attacks that read another file are first shown to work against a plain
ffmpeg command, so those tests would fail if the protection were missing."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import tarfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tools.shard import ShardConfig, TranscodeOptions, load_items, shard

RED, BLUE = (255, 0, 0), (0, 0, 255)  # the secret video is red, legitimate ones are blue


def _clip(path: Path, colour: str, fmt: str = "mp4") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c={colour}:s=64x48:r=8", "-t", "1", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-f", fmt, f"file:{path}"], check=True)
    return path


def _first_pixel(data: bytes, tmp: Path) -> tuple[int, int, int]:
    clip = tmp / "probe.bin"
    clip.write_bytes(data)
    rgb = subprocess.run(["ffmpeg", "-v", "error", "-i", f"file:{clip}", "-frames:v", "1",
                          "-vf", "scale=1:1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return tuple(rgb[:3])


def _near(pixel, colour) -> bool:
    return all(abs(a - b) < 60 for a, b in zip(pixel, colour, strict=True))


class _Listener:
    """A local TCP port that counts connection attempts (none may come from the shard step)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A video root with attacks in it, a secret outside it, and a manifest over all of it."""
    base = tmp_path_factory.mktemp("hostile")
    root, page, outside = base / "root", base / "root" / "page", base / "outside"
    _clip(outside / "secret.ts", "red", "mpegts")
    _clip(outside / "secret.mp4", "red")
    _clip(page / "inner" / "secret.mp4", "red")
    for name in ("good", "-i", "a:b"):
        _clip(page / f"{name}.mp4", "blue")
    (page / "hls.mp4").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n../../outside/secret.ts\n#EXT-X-ENDLIST\n")
    (page / "concat.mp4").write_text("ffconcat version 1.0\nfile 'inner/secret.mp4'\n")
    (page / "link.mp4").symlink_to(outside / "secret.mp4")
    listener = _Listener()
    (page / "remote.mp4").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\nhttp://127.0.0.1:{listener.port}/s.ts\n"
        "#EXT-X-ENDLIST\n")
    rows = [("good", "page"), ("-i", "page"), ("a:b", "page"), ("hls", "page"), ("concat", "page"),
            ("link", "page"), ("remote", "page"), ("absent", "page"),
            ("../../outside/secret", "page"),
            ("secret", "../outside"), ("secret", str(outside)), ("secret", "page/inner/../..")]
    manifest = base / "manifest.csv"
    pacsv.write_csv(pa.table({
        "videoid": [r[0] for r in rows], "page_dir": [r[1] for r in rows],
        "name": [f"caption {i}" for i in range(len(rows))],
        "contentUrl": [f"http://127.0.0.1:{listener.port}/{i}.mp4" for i in range(len(rows))],
    }), manifest)
    out = base / "out"
    items, _ = load_items(manifest, root, None)
    config = ShardConfig(out=out, transcode=TranscodeOptions(), workers=2, shard_size=4,
                         progress=False)
    summary = shard(items, config)
    listener.stop.set()
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    return {"base": base, "page": page, "out": out, "summary": summary, "listener": listener,
            "rows": rows}


def _row(hostile, key: str) -> dict:
    return next(r for r in hostile["rows"] if r["key"] == key)


def _plain_ffmpeg(src: Path, dst: Path) -> subprocess.CompletedProcess:
    """What an unprotected transcode does with the same file."""
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src.name,
                           "-c:v", "libx264", str(dst)],
                          cwd=src.parent, capture_output=True, timeout=60)


@pytest.mark.parametrize("name", ["hls", "concat"])
def test_playlist_or_concat_disguised_as_mp4_cannot_read_another_file(hostile, name, tmp_path):
    plain = _plain_ffmpeg(hostile["page"] / f"{name}.mp4", tmp_path / "plain.mp4")
    assert plain.returncode == 0, \
        "the attack must work against plain ffmpeg for this test to mean anything"
    assert _near(_first_pixel((tmp_path / "plain.mp4").read_bytes(), tmp_path), RED)
    row = _row(hostile, name)
    what = {"hls": "HLS playlist: refused", "concat": "ffconcat list: refused"}[name]
    assert row["status"] == "failed" and row["reason"].startswith(what), row


def test_nothing_of_the_secret_reaches_a_shard(hostile, tmp_path):
    import webdataset as wds

    tars = sorted(str(p) for p in (hostile["out"] / "wds").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    ok = sorted(r["key"] for r in hostile["rows"] if r["status"] == "ok")
    assert sorted(s["__key__"] for s in samples) == ok == ["-i", "a:b", "good"]
    for sample in samples:
        assert _near(_first_pixel(sample["mp4"], tmp_path), BLUE), sample["__key__"]
    secret = (hostile["base"] / "outside" / "secret.mp4").read_bytes()[-256:]
    for path in hostile["out"].rglob("*"):
        assert not path.is_file() or secret not in path.read_bytes(), path


def test_paths_never_escape_the_video_root(hostile):
    reason = _row(hostile, "../../outside/secret")["reason"]
    assert "unsafe videoid: '../../outside/secret'" in reason
    reasons = [r["reason"] for r in hostile["rows"] if r["key"] == "secret"]
    assert len(reasons) == 3 and all(r.startswith("unsafe page_dir") for r in reasons), reasons
    assert "resolves outside the video root" in _row(hostile, "link")["reason"]


def test_odd_file_names_shard_fine(hostile):
    for key in ("-i", "a:b", "good"):
        row = _row(hostile, key)
        assert row["status"] == "ok" and row["frames"] == 8, row


def test_no_network_is_touched(hostile):
    assert _row(hostile, "absent")["reason"] == "missing file"  # its contentUrl is never fetched
    remote = _row(hostile, "remote")
    assert remote["status"] == "failed" and remote["reason"].startswith("HLS playlist: refused")
    assert hostile["listener"].connections == 0
    summary = hostile["summary"]
    assert summary["inputs"] == len(hostile["rows"]) == summary["ok"] + summary["failed"]


def test_only_self_contained_demuxers_can_be_forced(tmp_path):
    from tools.shard.transcode import TranscodeError, safe_input

    for demuxer in ("hls", "concat", "image2"):
        with pytest.raises(TranscodeError, match=f"refused: demuxer '{demuxer}'"):
            safe_input(tmp_path / "x.mp4", demuxer)


def _add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = (0 if link else len(data)), kind, link
    tar.addfile(info, None if link else io.BytesIO(data))


def test_tar_member_names_cannot_escape(tmp_path):
    tars = tmp_path / "v2d"
    tars.mkdir()
    video = _clip(tmp_path / "v.mp4", "blue").read_bytes()
    with tarfile.open(tars / "00000.tar", "w") as tar:
        _add(tar, "../evil.mp4", video)
        _add(tar, "../evil.txt", b"x")
        _add(tar, "linked.mp4", b"", tarfile.SYMTYPE, link="/etc/passwd")
        _add(tar, "linked.txt", b"y")
        _add(tar, "fine.mp4", video)
        _add(tar, "fine.txt", b"a fine clip")
        _add(tar, "fine.json", json.dumps({"status": "success"}).encode())
    items, _ = load_items(None, None, tars)
    reasons = {i.key: i.error for i in items}
    assert reasons["evil"] == "unsafe tar member: '../evil.mp4' is absolute or contains '..'"
    assert reasons["linked"] == "unsafe tar member: 'linked.mp4' is not a regular file"
    assert reasons["fine"] is None
    summary = shard(items, ShardConfig(out=tmp_path / "out", workers=1, progress=False))
    assert summary["ok"] == 1 and summary["failed"] == 2
    assert not (tmp_path / "evil.mp4").exists()
