"""vtp bench pipeline SHARD_DIR: is the data loader the bottleneck?

Runs the whole training pipeline (frame sampling, DALI decode + crop/resize/flip/normalise,
video masks, tokenizer + MLM masks) over the shards and reports samples/s next to the limit
measured in the same run: ffmpeg's command line decoding the frames those samples need
(from the key frame before each sampled frame), with the same number of cores. Prints the
ratio; ≥ 0.9 means the loader costs little more than decoding itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

BENCHMARKS = ("pipeline",)


@dataclass
class PipelineResult:
    """One measurement: our samples/s, the ffmpeg limit in samples/s and what it rests on."""

    samples: int
    seconds: float
    ffmpeg_fps: float
    frames_per_sample: float
    cores: int

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    @property
    def limit(self) -> float:
        return self.ffmpeg_fps / self.frames_per_sample

    @property
    def ratio(self) -> float:
        return self.rate / self.limit


def key_frames(path: Path) -> list[int]:
    """Indices of the key frames of a clip (from its packets, nothing decoded)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=flags", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.split()
    return [i for i, flags in enumerate(out) if "K" in flags]


def frames_to_decode(indices, keys: list[int]) -> int:
    """Distinct frames any decoder must decode to output ``indices``: each from its key frame."""
    needed: set[int] = set()
    for index in {int(i) for i in indices}:
        start = max((k for k in keys if k <= index), default=0)
        needed.update(range(start, index + 1))
    return len(needed)


def ffmpeg_fps(files: list[Path], cores: int, repeats: int = 2) -> float:
    """Frames/s of ``ffmpeg -threads 1 ... -f null -`` over ``files``, ``cores`` at a time."""
    frames = sum(len(_packet_count(f)) for f in files) * repeats

    def decode(path: Path) -> None:
        subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null",
                        "-"], check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(decode, files * repeats))
    return frames / (time.perf_counter() - start)


def _packet_count(path: Path) -> list[str]:
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "packet=pts", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout.split()


def pipeline_rate(cfg, epochs: int) -> tuple[int, float]:
    """(samples, seconds) of the full loader over ``epochs`` epochs, first batch excluded."""
    from pipeline import build_dataloader

    loader = build_dataloader(cfg)
    samples, start = 0, None
    for _ in range(epochs):
        for batch in loader:
            if start is None:  # the first batch pays for worker start-up and DALI's build
                start = time.perf_counter()
                continue
            samples += len(batch["keys"])
    return samples, time.perf_counter() - start


def clips_and_needs(cfg, epochs: int, folder: Path) -> tuple[list[Path], float]:
    """Writes each sample's video to ``folder``; returns the files and mean frames to decode."""
    from pipeline.loader import BatchBuilder, build_source

    source = build_source(replace(cfg, format="mds"), clean_shared_memory=False)
    builder, files, needs = BatchBuilder(cfg), [], []
    for index in range(len(source)):
        sample = source[index]
        path = folder / f"{index}.{sample['meta']['codec']}"
        path.write_bytes(sample["video"])
        files.append(path)
        keys = key_frames(path)
        for epoch in range(epochs):
            feed = builder.sample_feed({**sample, "epoch": epoch})
            needs.append(frames_to_decode(feed["frames"], keys))
    return files, sum(needs) / len(needs)


def measure(cfg, epochs: int = 3, cores: int | None = None) -> PipelineResult:
    """Measures the pipeline configured by ``cfg`` and its ffmpeg limit in the same run.

    Args:
        cfg: a DataConfig over MDS shards (the limit reads the clips from MDS).
        epochs: passes over the shards (each epoch draws new frames).
        cores: processes for the ffmpeg limit (default: all cores).
    """
    cores = cores or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        files, per_sample = clips_and_needs(cfg, epochs, Path(tmp))
        fps = ffmpeg_fps(files, cores)
        samples, seconds = pipeline_rate(cfg, epochs)
    return PipelineResult(samples, seconds, fps, per_sample, cores)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS, help="what to benchmark")
    parser.add_argument("shard_dir", type=Path, help="`vtp shard` output (with mds/) or an MDS folder")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="DALI threads per pipeline (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    from tools.cli import UsageError

    if not args.shard_dir.exists():
        raise UsageError(f"{args.shard_dir} does not exist")
    from pipeline import DataConfig

    cfg = DataConfig(path=str(args.shard_dir), device=args.device, batch_size=args.batch_size,
                     image_size=args.image_size, num_workers=args.workers,
                     num_threads=args.threads)
    try:
        result = measure(cfg, args.epochs)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    print(f"pipeline ({args.device}, {args.workers} workers x {args.threads} DALI threads): "
          f"{result.rate:.1f} samples/s over {result.samples} samples\n"
          f"limit: ffmpeg, {result.cores} processes: {result.ffmpeg_fps:.0f} frames/s / "
          f"{result.frames_per_sample:.1f} frames per sample = {result.limit:.1f} samples/s\n"
          f"ratio: {result.ratio:.2f}")
    return 0
