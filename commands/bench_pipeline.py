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
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

BENCHMARKS = ("pipeline",)
LIMIT_REPEATS = 3


@dataclass
class PipelineResult:
    """One measurement: ours and ffmpeg's, in wall-clock and in CPU seconds.

    CPU seconds make the ratio robust on a shared machine: both sides are charged only for the
    processor time they used, converted to samples/s on ``cores`` cores.
    """

    samples: int
    seconds: float
    cpu_seconds: float
    frames_decoded: int
    ffmpeg_seconds: float
    ffmpeg_cpu_seconds: float
    frames_per_sample: float
    cores: int
    decoder_fps: float = 0.0  # ffmpeg's bare decoder (concatenated input), CPU frames/s per core

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    @property
    def limit(self) -> float:
        return self.frames_decoded / self.ffmpeg_seconds / self.frames_per_sample

    @property
    def ratio(self) -> float:
        return self.rate / self.limit

    @property
    def cpu_rate(self) -> float:
        return self.samples / self.cpu_seconds * self.cores

    @property
    def cpu_limit(self) -> float:
        return self.frames_decoded / self.ffmpeg_cpu_seconds / self.frames_per_sample * self.cores

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_rate / self.cpu_limit

    @property
    def decoder_limit(self) -> float:
        """Samples/s on ``cores`` free cores if decoding cost only ffmpeg's bare decoder time."""
        return self.decoder_fps / self.frames_per_sample * self.cores


def cpu_time() -> float:
    """CPU seconds used so far by this process, its live children (DataLoader workers) and its
    finished children (ffmpeg, exited workers); reading live workers leaves out their start-up
    before the first batch."""
    import psutil

    own, done = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            live += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime + live


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


def ffmpeg_decode(files: list[Path], cores: int, folder: Path,
                  concat: bool = False) -> tuple[int, float, float]:
    """Decodes every frame of ``files`` with ffmpeg's command line, ``cores`` processes at once.

    By default one process per clip (what DESIGN.md section 8 measured). With ``concat`` each
    core's share is one concatenated input, so process start-up is paid once per core: the bare
    decoder, a stricter limit.

    Returns:
        (frames decoded, wall seconds, CPU seconds).
    """
    frames = sum(len(_packets(f)) for f in files)
    inputs = [["-i", str(f)] for f in files]
    if concat:
        inputs = []
        for core in range(cores):
            share = folder / f"core{core}.txt"
            share.write_text("".join(f"file '{f}'\n" for f in files[core::cores]))
            inputs.append(["-f", "concat", "-safe", "0", "-i", str(share)])

    def decode(source: list[str]) -> None:
        subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", *source, "-f", "null", "-"],
                       check=True)

    cpu, start = cpu_time(), time.perf_counter()
    with ThreadPoolExecutor(cores) as pool:
        list(pool.map(decode, inputs))
    return frames, time.perf_counter() - start, cpu_time() - cpu


def _packets(path: Path) -> list[str]:
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "packet=pts", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout.split()


def pipeline_rate(cfg, epochs: int) -> tuple[int, float, float]:
    """(samples, wall seconds, CPU seconds) of the full loader after its warm-up: the first
    batch of each worker (or of the main process) pays for start-up, DALI's build and the
    tokenizer's load, once per run."""
    from pipeline import build_dataloader
    from pipeline.decode import normalize_video

    loader = build_dataloader(cfg)
    warm_up = max(cfg.num_workers, 1)
    samples, seen, start, cpu = 0, 0, None, 0.0
    for _ in range(epochs):
        for batch in loader:
            batch = normalize_video(batch)  # counted: uint8 hand-over still ends in float32
            seen += 1
            if seen == warm_up:
                start, cpu = time.perf_counter(), cpu_time()
            elif seen > warm_up:
                samples += len(batch["keys"])
    if start is None:
        raise ValueError(f"too few batches to measure: {seen} (warm-up takes {warm_up}); "
                         "raise --epochs or use more clips")
    return samples, time.perf_counter() - start, cpu_time() - cpu  # workers still alive


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
        # Best of LIMIT_REPEATS: a decode of a few seconds swings with anything else running.
        runs = [ffmpeg_decode(files, cores, Path(tmp)) for _ in range(LIMIT_REPEATS)]
        frames, ff_seconds, ff_cpu = runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs)
        bare_cpu = min(ffmpeg_decode(files, cores, Path(tmp), concat=True)[2]
                       for _ in range(LIMIT_REPEATS))
        samples, seconds, cpu = pipeline_rate(cfg, epochs)
    return PipelineResult(samples, seconds, cpu, frames, ff_seconds, ff_cpu, per_sample, cores,
                          frames / bare_cpu)


def report(result: PipelineResult, label: str) -> str:
    """A few lines a user can read: ours, the limit, the ratio (wall-clock and CPU-time)."""
    r = result
    return (f"pipeline ({label}): {r.rate:.1f} samples/s over {r.samples} samples\n"
            f"limit: ffmpeg decoding the same frames ({r.frames_per_sample:.1f} per sample) on "
            f"{r.cores} processes: {r.limit:.1f} samples/s\n"
            f"ratio: {r.ratio:.2f} (wall clock); {r.cpu_ratio:.2f} by CPU time "
            f"({r.cpu_rate:.1f} vs {r.cpu_limit:.1f} samples/s on {r.cores} free cores)\n"
            f"stricter limit, ffmpeg's bare decoder (no start-up per clip): "
            f"{r.decoder_limit:.1f} samples/s by CPU time, ratio {r.cpu_rate / r.decoder_limit:.2f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=BENCHMARKS, help="what to benchmark")
    parser.add_argument("shard_dir", type=Path, help="`vtp shard` output (with mds/) or an MDS folder")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="DALI threads per pipeline (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3,
                        help="passes over the shards (each draws new frames); the first batch "
                             "of every worker is warm-up and not counted")
    parser.add_argument("--interpolation", choices=("nearest", "linear", "cubic"), default="linear",
                        help="resize filter (data.interpolation); nearest is far cheaper on a CPU")
    parser.add_argument("--uint8", action="store_true",
                        help="hand over uint8 video, normalise after (data.normalize_on_device)")


def run(args: argparse.Namespace) -> int:
    from commands.cli import UsageError

    if not args.shard_dir.exists():
        raise UsageError(f"{args.shard_dir} does not exist")
    from pipeline import DataConfig

    cfg = DataConfig(path=str(args.shard_dir), device=args.device, batch_size=args.batch_size,
                     image_size=args.image_size, num_workers=args.workers,
                     num_threads=args.threads, normalize_on_device=args.uint8,
                     interpolation=args.interpolation)
    try:
        result = measure(cfg, args.epochs)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    hand_over = "uint8" if args.uint8 else "float32"
    print(report(result, f"{args.device}, {args.workers} workers x {args.threads} DALI threads, "
                         f"{args.interpolation} resize, {hand_over} hand-over"))
    return 0
