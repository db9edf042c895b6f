"""Small MDS and WebDataset shards for the pipeline tests, built without `vtp shard`.

Until `vtp shard` lands this module transcodes clips with ffmpeg and writes both shard formats
in the shared contract (MDS columns key/video/caption/meta; tars with KEY.{webm|avi|mp4},
KEY.txt, KEY.json and a DALI .idx). Swap `build_shards` for `vtp shard` later.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.media import probe_frames

EXTENSIONS = {"h264": "mp4", "vp9": "webm", "mjpeg": "avi"}
ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
            "-row-mt", "1", "-pix_fmt", "yuv420p"],
    "mjpeg": ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"],
}


def transcode(src: Path, dst: Path, codec: str, height: int | None = None, gop: int = 32) -> Path:
    """Re-encodes ``src`` with ``codec`` (h264, vp9 or mjpeg), optionally scaled to ``height``."""
    scale = ["-vf", f"scale=-2:{height}"] if height else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-an", *scale,
                    *ENCODERS[codec], "-g", str(gop), str(dst)], check=True)
    return dst


def clip_meta(path: Path, source: str) -> dict:
    """The shard metadata of one clip (frames, fps, width, height, codec, source)."""
    stream = probe_frames(path)
    num, den = (int(x) for x in stream["r_frame_rate"].split("/"))
    return {"frames": stream["nb_read_frames"], "fps": num / den, "width": stream["width"],
            "height": stream["height"], "codec": stream["codec_name"], "source": source}


def write_mds(samples: list[dict], out: Path, size_limit: str = "256kb") -> None:
    """Writes ``samples`` (key, video, caption, meta) as MDS shards into ``out``."""
    from streaming import MDSWriter

    columns = {"key": "str", "video": "bytes", "caption": "str", "meta": "json"}
    with MDSWriter(out=str(out), columns=columns, size_limit=size_limit) as writer:
        for sample in samples:
            writer.write(sample)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(samples: list[dict], out: Path, per_tar: int = 4) -> None:
    """Writes ``samples`` as WebDataset tars of ``per_tar`` samples, each with a DALI .idx."""
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(samples), per_tar):
        path = out / f"{start // per_tar:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for sample in samples[start:start + per_tar]:
                ext = EXTENSIONS[sample["meta"]["codec"]]
                _add(tar, f"{sample['key']}.{ext}", sample["video"])
                _add(tar, f"{sample['key']}.txt", sample["caption"].encode())
                _add(tar, f"{sample['key']}.json", json.dumps(sample["meta"]).encode())
        wds2idx = Path(sys.executable).parent / "wds2idx"
        subprocess.run([str(wds2idx), str(path), str(path.with_suffix(".idx"))], check=True,
                       capture_output=True)


def build_shards(clips: list[tuple[str, Path, str]], out: Path, codec: str,
                 height: int | None = None, per_tar: int = 4) -> dict[str, Path]:
    """Transcodes ``clips`` (key, path, caption) and writes OUT/mds and OUT/wds.

    Returns:
        key -> the transcoded file (what ffmpeg decodes as the reference).
    """
    (out / "videos").mkdir(parents=True, exist_ok=True)
    files, samples = {}, []
    for key, src, caption in clips:
        dst = transcode(src, out / "videos" / f"{key}.{EXTENSIONS[codec]}", codec, height)
        files[key] = dst
        samples.append({"key": key, "video": dst.read_bytes(), "caption": caption,
                        "meta": clip_meta(dst, str(src))})
    write_mds(samples, out / "mds")
    write_wds(samples, out / "wds", per_tar)
    return files


@dataclass
class ShardSet:
    """One codec's shards: ``root`` holds mds/ and wds/; ``files`` maps key -> clip file."""

    root: Path
    files: dict[str, Path]


@pytest.fixture(scope="session")
def pipeline_shards(tmp_path_factory, synth_dir, ground_truth) -> dict[str, ShardSet]:
    """VP9 (10 clips), MJPEG (4), H.264 (2) and a VP9 set with one truncated clip."""
    usable = [r for r in ground_truth if r["split"] == "train" and r["file_defect"] is None
              and r["caption_clean"] and r["dup_of"] is None]
    clips = [(r["videoid"], synth_dir / r["path"], r["caption_clean"]) for r in usable]
    root = tmp_path_factory.mktemp("shards")
    sets = {codec: ShardSet(root / codec, build_shards(clips[:count], root / codec, codec))
            for codec, count in (("vp9", 10), ("mjpeg", 4), ("h264", 2))}
    sets["corrupt"] = _corrupt_set(sets["vp9"], root / "corrupt")
    return sets


def _corrupt_set(good: ShardSet, out: Path) -> ShardSet:
    """Four VP9 samples, the third one's bytes cut to a garbled half (as a bad copy would)."""
    samples = []
    for index, (key, path) in enumerate(list(good.files.items())[:4]):
        video = path.read_bytes()
        if index == 2:
            video = video[:64] + bytes(len(video) // 2)
        samples.append({"key": key, "video": video, "caption": "a clip",
                        "meta": clip_meta(path, str(path))})
    write_mds(samples, out / "mds")
    write_wds(samples, out / "wds")
    return ShardSet(out, dict(list(good.files.items())[:4]))
