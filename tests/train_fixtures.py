"""Small VP9 MDS shards for the training tests: synthetic clips cut to 2 s at 64x48 pixels.

Small on purpose: the tiny model sees 32x32 crops of 8 frames, so decoding full 320x240 clips
would only slow the CPU tests down. Written in the shard contract (MDS columns key, video,
caption, meta) that `vtp shard` produces.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools.media import probe_frames

NUM_CLIPS = 16
VP9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
       "-pix_fmt", "yuv420p", "-g", "16"]


def small_vp9(src: Path, dst: Path, seconds: float = 2.0, height: int = 48) -> dict:
    """Cuts ``src`` to ``seconds``, scales it to ``height`` and encodes VP9; returns its meta."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", f"file:{src}", "-t", str(seconds), "-an",
                    "-vf", f"scale=-2:{height}", *VP9, f"file:{dst}"], check=True)
    stream = probe_frames(dst)
    num, den = (int(x) for x in stream["r_frame_rate"].split("/"))
    return {"frames": stream["nb_read_frames"], "fps": num / den, "width": stream["width"],
            "height": stream["height"], "codec": stream["codec_name"], "source": str(src)}


def build_train_shards(clips: list[tuple[str, Path, str]], out: Path) -> Path:
    """Writes ``clips`` (key, path, caption) as VP9 MDS shards under OUT/mds; returns OUT."""
    from streaming import MDSWriter

    (out / "videos").mkdir(parents=True, exist_ok=True)
    columns = {"key": "str", "video": "bytes", "caption": "str", "meta": "json"}
    with MDSWriter(out=str(out / "mds"), columns=columns, size_limit="64kb") as writer:
        for key, src, caption in clips:
            dst = out / "videos" / f"{key}.webm"
            meta = small_vp9(src, dst)
            writer.write({"key": key, "video": dst.read_bytes(), "caption": caption, "meta": meta})
    return out


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory, synth_dir, ground_truth) -> Path:
    """16 clean synthetic clips as small VP9 MDS shards (a `vtp shard` output folder)."""
    usable = [r for r in ground_truth if r["split"] == "train" and r["file_defect"] is None
              and r["caption_clean"] and r["dup_of"] is None][:NUM_CLIPS]
    assert len(usable) == NUM_CLIPS, f"the synthetic test set has only {len(usable)} clean clips"
    clips = [(r["videoid"], synth_dir / r["path"], r["caption_clean"]) for r in usable]
    return build_train_shards(clips, tmp_path_factory.mktemp("train_shards"))
