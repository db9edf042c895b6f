"""Files that are not what their name says, files cut short, rows that cannot be files: each
becomes its own failed row whose reason says what the file is, and the rest of the run goes on.
Every hostile file is made here with ffmpeg or by hand."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tools.shard import ShardConfig, TranscodeOptions, load_items, shard

SOURCE = ["-f", "lavfi", "-i", "testsrc=s=64x48:r=8"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def _ffmpeg(path: Path, *args: str, seconds: float = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args[:-2], "-t", str(seconds),
                    *args[-2:], f"file:{path}"], check=True)
    return path


def _cut_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# key -> (how the file is made, what its reason must start with; None: it must land ok)
def _make(page: Path) -> dict[str, str | None]:
    _ffmpeg(page / "good.mp4", *SOURCE, *H264, "-f", "mp4")
    _ffmpeg(page / "avi.mp4", *SOURCE, "-c:v", "mjpeg", "-f", "avi")
    _ffmpeg(page / "webm.mp4", *SOURCE, "-c:v", "libvpx", "-deadline", "realtime", "-f", "webm")
    _ffmpeg(page / "ts.mp4", *SOURCE, *H264, "-f", "mpegts")
    _ffmpeg(page / "mkv.mp4", *SOURCE, *H264, "-f", "matroska")
    _ffmpeg(page / "png.mp4", *SOURCE, "-frames:v", "1", "-c:v", "png", "-f", "image2", seconds=1)
    _ffmpeg(page / "audio.mp4", "-f", "lavfi", "-i", "sine=frequency=440", "-c:a", "aac",
            "-f", "mp4")
    _ffmpeg(page / "wav.mp4", "-f", "lavfi", "-i", "sine=frequency=440", "-f", "wav")
    _cut_half(_ffmpeg(page / "faststart.mp4", *SOURCE, *H264, "-movflags", "+faststart",
                      "-f", "mp4", seconds=6))
    _cut_half(_ffmpeg(page / "mkvcut.mp4", *SOURCE, *H264, "-f", "matroska", seconds=6))
    (page / "hls.mp4").write_text("#EXTM3U\n#EXTINF:1,\nother.ts\n#EXT-X-ENDLIST\n")
    (page / "concat.mp4").write_text("ffconcat version 1.0\nfile 'good.mp4'\n")
    (page / "text.mp4").write_text("just some words, no video here\n")
    (page / "noise.mp4").write_bytes(bytes(range(7, 250)) * 4)
    return {
        "good": None, "avi": None, "webm": None, "ts": None, "mkv": None,
        "png": "PNG image, not a video",
        "audio": "audio only: no video stream",
        "wav": "WAV audio, not a video",
        "faststart": "mp4 truncated: the file ends at byte",
        "mkvcut": "matroska/webm truncated: decoded",
        "hls": "HLS playlist: refused, playlists reference other files",
        "concat": "ffconcat list: refused, concat lists reference other files",
        "text": "text file, not a video",
        "noise": "unknown format, not a video",
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile_media")
    root = base / "root"
    expected = _make(root / "page")
    long_id, long_dir = "7" * 300, "d" * 300
    rows = [(key, "page") for key in expected] + [(long_id, "page"), ("good", long_dir)]
    manifest = base / "manifest.csv"
    pacsv.write_csv(pa.table({"videoid": [r[0] for r in rows], "page_dir": [r[1] for r in rows],
                              "name": [f"caption of {r[0][:10]}" for r in rows]}), manifest)
    items, _ = load_items(manifest, root, None)
    out = base / "out"
    config = ShardConfig(out=out, transcode=TranscodeOptions(short_side=48), workers=2,
                         shard_size=8, batch=4, progress=False)
    summary = shard(items, config)
    manifest_rows = pq.read_table(out / "manifest.parquet").to_pylist()
    return {"expected": expected, "summary": summary, "rows": manifest_rows, "out": out,
            "long_id": long_id, "root": root}


def test_mislabelled_containers_shard_and_the_rest_say_what_they_are(hostile):
    by_key = {r["key"]: r for r in hostile["rows"] if r["source"].startswith("page/")}
    for key, reason in hostile["expected"].items():
        row = by_key[key]
        if reason is None:
            assert row["status"] == "ok" and row["frames"] == 16, row
        else:
            assert row["status"] == "failed" and row["reason"].startswith(reason), \
                (key, row["reason"])


def test_a_name_too_long_for_the_file_system_fails_its_row_only(hostile):
    rows = hostile["rows"]
    summary = hostile["summary"]
    assert summary["complete"] and summary["inputs"] == len(rows) == len(hostile["expected"]) + 2
    long_id = next(r for r in rows if r["key"] == hostile["long_id"])
    assert long_id["status"] == "failed"
    assert long_id["reason"].startswith("unsafe videoid: 300 characters")
    long_dir = next(r for r in rows if r["key"] == "good" and r["source"].startswith("ddd"))
    assert long_dir["status"] == "failed"
    assert long_dir["reason"].startswith("unusable path: File name too long"), long_dir


def test_video_path_turns_an_os_error_into_a_reason(tmp_path):
    from tools.shard.inputs import video_path

    path, reason = video_path(tmp_path, "x" * 300, "1")
    assert path is None and reason.startswith("unusable path: File name too long")


def test_failure_reason_kinds_keep_quoted_keys_whole(hostile):
    from tools.shard.runner import reason_counts, reason_kind

    assert reason_kind("unsafe videoid: 'a:b' contains ['.']") == "unsafe videoid"
    assert reason_kind("'a:b': odd") == "'a:b'"
    assert reason_kind("no mp4 in tar: video2dataset status failed (HTTP 404)") == "no mp4 in tar"
    assert reason_kind("start 100 s is past the clip's end (6.0 s)") == \
        "start 100 s is past the clip's end (6.0 s)"
    counts = reason_counts([{"status": "failed", "reason": "x (a: b): c"},
                            {"status": "ok", "reason": ""}])
    assert counts == {"x (a: b)": 1}
    assert hostile["summary"]["failure_reasons"]["HLS playlist"] == 1


def test_index_files_are_as_readable_as_their_tars(hostile):
    tars = sorted((hostile["out"] / "wds").glob("*.tar"))
    assert tars
    for tar in tars:
        mode = stat.S_IMODE(os.stat(tar).st_mode)
        assert stat.S_IMODE(os.stat(tar.with_suffix(".idx")).st_mode) == mode, tar


def test_start_past_the_end_says_so(hostile, tmp_path):
    from tools.shard.inputs import WorkItem
    from tools.shard.worker import process_batch

    path = hostile["root"] / "page" / "good.mp4"
    item = WorkItem(key="good", caption="c", source="good.mp4", path=str(path))
    (result,) = process_batch([item], TranscodeOptions(start=100), str(tmp_path))
    assert result.status == "failed"
    assert result.reason == "start 100 s is past the clip's end (2.0 s)"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _v2d_tar(path: Path, video: bytes, samples: int) -> list[tuple[str, int]]:
    """A video2dataset-style tar; returns (member name, header offset) of every member."""
    with tarfile.open(path, "w") as tar:
        for i in range(samples):
            _add(tar, f"{i:09d}.mp4", video)
            _add(tar, f"{i:09d}.txt", f"caption {i}".encode())
            meta = {"videoid": f"vid{i}", "status": "success"}
            _add(tar, f"{i:09d}.json", json.dumps(meta).encode())
    with tarfile.open(path) as tar:
        return [(m.name, m.offset) for m in tar]


@pytest.mark.parametrize("cut_inside", ["000000001.txt", "000000001.json", "000000002.mp4"])
def test_a_truncated_v2d_tar_keeps_the_captions_and_keys_before_the_cut(hostile, tmp_path,
                                                                        cut_inside):
    video = (hostile["root"] / "page" / "good.mp4").read_bytes()
    tars = tmp_path / "v2d"
    tars.mkdir()
    members = dict(_v2d_tar(tars / "00000.tar", video, 3))
    data = (tars / "00000.tar").read_bytes()
    (tars / "00000.tar").write_bytes(data[: members[cut_inside] + 100])  # inside the header
    items, _ = load_items(None, None, tars)
    by_key = {i.key: i for i in items}
    assert by_key["vid0"].error is None and by_key["vid0"].caption == "caption 0"
    if cut_inside == "000000002.mp4":
        assert by_key["vid1"].error is None and by_key["vid1"].caption == "caption 1"
        assert set(by_key) == {"vid0", "vid1", "tar-00000"}  # sample 2's header is the cut
    else:
        assert by_key["000000001"].error.startswith(
            "truncated tar: the tar is cut inside this sample")
    assert by_key["tar-00000"].error.startswith("unreadable tar: ")
    assert all(i.caption for i in items if i.error is None)


def test_mp4_boxes_declare_what_ffprobe_says(hostile):
    from tools.shard.source import _probe_json, check_mp4_boxes, mp4_tracks

    for name in ("good", "audio"):
        path = hostile["root"] / "page" / f"{name}.mp4"
        ours = mp4_tracks(path, check_mp4_boxes(path))
        probed = _probe_json(path, "mov", 60)["streams"]
        assert [{b"vide": "video", b"soun": "audio"}[h] for h, _ in ours] == \
            [s["codec_type"] for s in probed]
        for (handler, seconds), stream in zip(ours, probed, strict=True):
            if handler == b"vide":  # (audio: ffprobe takes the encoder delay off, we need not)
                assert seconds == pytest.approx(float(stream["duration"]), abs=1e-3)


def test_keys_that_would_break_a_tar_name_or_a_dali_index_line_are_refused():
    from tools.shard.inputs import check_key

    assert check_key("a b") == "unsafe videoid: 'a b' contains white space"
    assert check_key("a\tb").startswith("unsafe videoid: 'a\\tb' contains control characters")
    assert check_key("9" * 201).startswith("unsafe videoid: 201 characters")
    assert check_key("0071") is None


def test_short_decode_compares_frames_with_the_declared_duration():
    from tools.shard.source import Source, short_decode

    mp4 = Source("mov", 6.0)
    assert short_decode(48, 8.0, mp4, 0.0, None) is None
    assert short_decode(47, 8.0, mp4, 0.0, None) is None  # a frame of rounding is fine
    assert short_decode(16, 8.0, mp4, 0.0, None) == \
        "mp4 truncated: decoded 16 frames (2.0 s) where the container declares 6.0 s"
    assert short_decode(16, 8.0, mp4, 4.0, None) is None  # the window starts at 4 s
    assert short_decode(16, 8.0, mp4, 0.0, 2.0) is None  # and is 2 s long
    assert short_decode(16, 8.0, Source("mov", None), 0.0, None) is None  # nothing declared
