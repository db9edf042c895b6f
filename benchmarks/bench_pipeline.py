"""Training data pipeline: samples/s of the whole CPU pipeline against ffmpeg's decode limit.

20 synthetic clips (4-8 s, 342x256, 16 fps, GOP 32) transcoded to VP9 and MJPEG, 16x4 dense
sampling, 224 px crops, tube + MLM masks. The limit, measured in the same run on the same
cores, is ffmpeg's command line decoding the frames our samples need (DESIGN.md section 8):
one process per clip, as many processes as cores, converted to samples/s with the number of
frames a decoder must decode per sample (from the key frame before each sampled frame).
Ratios are given by wall clock and by CPU time (robust when other jobs share the machine).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tools.bench_pipeline import measure
from tools.synth import SynthConfig, generate

CLIPS = 20
CORES = os.cpu_count() or 1
SETTINGS = [(0, CORES, False), (CORES, 1, False), (CORES, 1, True)]  # workers, threads, uint8


def _shards(work: Path, codecs: tuple[str, ...]) -> dict[str, Path]:
    """VP9/MJPEG/H.264 shards of the same clips (tests/shard_fixtures.py until `vtp shard`)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from shard_fixtures import build_shards

    config = SynthConfig(num_clips=CLIPS, num_test=0, seed=2, defect_rate=0.0,
                         width=342, height=256)
    generate(config, work / "synth", progress=False)
    rows = pq.read_table(work / "synth" / "ground_truth.parquet").to_pylist()
    clips = [(r["videoid"], work / "synth" / r["path"], r["caption_clean"]) for r in rows]
    return {codec: (build_shards(clips, work / codec, codec), work / codec)[1]
            for codec in codecs}


def _config(root: Path, device: str, workers: int, threads: int, uint8: bool = False):
    from pipeline import DataConfig

    return DataConfig(path=str(root), device=device, batch_size=8, image_size=224,
                      num_frames=16, stride=4, num_workers=workers, num_threads=threads,
                      normalize_on_device=uint8)


def _row(label: str, r) -> str:
    return (f"| {label} | {r.rate:.1f} | {r.limit:.1f} | {r.ratio:.2f} | {r.cpu_rate:.1f} | "
            f"{r.cpu_limit:.1f} | **{r.cpu_ratio:.2f}** | {r.decoder_limit:.0f} | "
            f"{r.frames_per_sample:.0f} |")


def _gpu_section(work: Path) -> str:
    import torch

    if not torch.cuda.is_available():
        return ("GPU mode (mixed decoder, H.264): **not run**: no CUDA device on this machine. "
                "It runs automatically where `torch.cuda.is_available()`.\n")
    card = torch.cuda.get_device_name(0)
    root = _shards(work / "gpu", ("h264",))["h264"]
    result = measure(_config(root, "gpu", 0, 4), epochs=3)
    return (f"GPU mode on {card} (DALI mixed decoder, H.264; limit: ffmpeg on the CPU cores):\n\n"
            f"| setting | samples/s | ffmpeg limit | ratio |\n|---|---|---|---|\n"
            f"| gpu, 4 DALI threads | {result.rate:.1f} | {result.limit:.1f} | "
            f"{result.ratio:.2f} |\n")


def run(work: Path) -> str:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    roots = _shards(work, ("vp9", "mjpeg"))
    rows = []
    for codec, root in roots.items():
        for workers, threads, uint8 in SETTINGS:
            result = measure(_config(root, "cpu", workers, threads, uint8), epochs=3)
            hand_over = ", uint8 hand-over" if uint8 else ""
            rows.append(_row(f"{codec}, {workers} workers x {threads} threads{hand_over}", result))
    gpu = _gpu_section(work)
    shutil.rmtree(work, ignore_errors=True)
    return (
        "## Training data pipeline (`vtp bench pipeline`)\n\n"
        f"{CLIPS} clips at 342x256 (GOP 32), 16x4 dense sampling, 224 px, batch 8, "
        f"{os.cpu_count()} cores; decode + sample + crop/resize/flip/normalise + tube mask + "
        "tokenize/MLM. Limit: ffmpeg's command line decoding the same frames (one process per "
        "clip, one per core). Bare decoder: ffmpeg on concatenated input (no start-up), by CPU "
        "time. uint8 hand-over: workers pass uint8 video and the main process normalises "
        "(on a GPU the DataSpec does it on the device).\n\n"
        "| codec, setting | samples/s | limit | ratio (wall) | samples/s by CPU | limit by CPU "
        "| ratio (CPU) | bare-decoder limit by CPU | frames decoded per sample |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Target: ratio >= 0.9. " + gpu
    )
