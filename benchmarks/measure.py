"""Measuring the training data pipeline against the bare decoder and the peer loaders.

What `vtp bench pipeline` and `make bench` run (commands/bench_pipeline.py is the command
line). Same run, same shards, frames and cores:
- the bare decoder: libavcodec (PyAV, in-process, one thread) decoding exactly the frames
  each sample needs, then per frame one libswscale call that resizes the crop window and
  converts it to RGB at once (uint8), flip, and the normalise to float32 that vtp's output
  also has: the physical limit (benchmarks/peers.py, ``bare_decode``);
- the peer loaders a user would write instead (benchmarks/peers.py: PyAV VideoMAE-style,
  torchcodec, decord, then torchvision's v2 uint8 crop/resize and normalise), each in a
  torch DataLoader with as many worker processes as cores.
vtp and the peers output the same float32 (B, 3, T, S, S) normalised batches of the same
frames, crops and flips (vtp's sampler draws them; ``plans`` hands them to the others) and
tube masks; vtp alone also tokenises and masks the captions (counted against it). The limit
outputs the same clips one by one, (3, T, S, S), with no batch to stack and no masks.
Every side is timed alike: each process's first batch (and what workers prefetched
meanwhile) is warm-up, the batches after it are cut into equal runs and the best run counts
(the limit: one warm-up sample, then the best of REPEATS passes over every sample, one
epoch's plan each); CPU time counts every process of a side. The limit runs in-process on
one core; its wall rate on ``cores`` cores is taken as its CPU rate (perfect parallelism, no
start-up, no hand-over: the most any loader could reach). Peers and the limit need the
``bench`` extra.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field, replace

BENCHMARKS = ("pipeline",)
REPEATS = 3


@dataclass
class Rate:
    """Samples/s of one side: by wall clock, and by CPU time on ``cores`` free cores."""

    wall: float
    cpu: float

    def __truediv__(self, other: Rate) -> Rate:
        return Rate(self.wall / other.wall, self.cpu / other.cpu)


@dataclass
class PipelineResult:
    """vtp, the bare-decoder limit and the peers, measured on the same samples."""

    ours: Rate
    bare: Rate | None = None
    bare_frames: float = 0.0  # frames the bare decoder decoded per sample
    decode_only: float = 0.0  # samples/s by CPU of the bare decoder without pixel work
    peers: dict[str, Rate] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def best_peer(self) -> tuple[str, Rate] | None:
        if not self.peers:
            return None
        return max(self.peers.items(), key=lambda kv: kv[1].cpu)


def cpu_time() -> float:
    """CPU seconds used so far by this process, its live children (DataLoader workers) and its
    finished children."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            live += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime + live


def _mark(made: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """(wall clock, CPU seconds of the side) now, or, for batches made in DataLoader workers,
    when the workers finished their latest batches: the main process's own CPU plus each
    worker's CPU at that point (benchmarks/peers.py stamps it, ``made_stamp``).

    Timing worker batches where they are made, not where they arrive, keeps a stall of the
    main process (a loaded machine, a descheduled consumer) from turning the batches the
    workers prefetched meanwhile into a burst that times as free; an in-process side (vtp
    with 0 workers, the limit) has no queue to burst from.
    """
    if not made:
        return time.perf_counter(), cpu_time()
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (max(wall for wall, _ in made.values()),
            own.ru_utime + own.ru_stime + sum(cpu for _, cpu in made.values()))


def timed(batches, warm_up: int, cores: int, repeats: int = REPEATS, rounds: int = 1) -> Rate:
    """Best of ``repeats`` equal runs of batches, after ``warm_up`` batches.

    Args:
        batches: an iterable of batch dicts (each with ``video``, and ``made`` where a worker
            stamped it: see ``_mark``).
        warm_up: batches not counted (one per process: start-up, pipeline build).
        cores: cores the CPU rate is converted to.
        repeats: runs the counted batches are cut into.
        rounds: batches that arrive together (DataLoader workers finish theirs at about the
            same time); a run is a whole number of rounds, or it could time the gap inside one
            (and, with stamps, hold a different number of batches from each worker).
    """
    marks: list[tuple[float, float, int]] = []
    made: dict[int, tuple[float, float]] = {}  # worker id -> (wall, CPU) at its latest batch
    seen = samples = 0
    for batch in batches:
        seen += 1
        stamp = batch.get("made") if isinstance(batch, dict) else None
        if stamp is not None:
            made[stamp[0]] = (stamp[1], stamp[2])
        if seen > warm_up:
            samples += len(batch["video"])
        if seen >= warm_up:
            marks.append((*_mark(made), samples))
    counted = len(marks) - 1
    if counted < repeats:
        raise ValueError(f"too few batches to measure: {seen} (warm-up takes {warm_up}, "
                         f"then {repeats} runs); raise --epochs or use more clips")
    step = max(counted // (repeats * rounds), 1) * rounds
    if step * repeats > counted:
        raise ValueError(f"too few batches to measure: {counted} after warm-up for {repeats} "
                         f"runs of {rounds} batches")
    best = Rate(0.0, 0.0)
    for run in range(repeats):
        (t0, c0, s0), (t1, c1, s1) = marks[run * step], marks[(run + 1) * step]
        best = Rate(max(best.wall, (s1 - s0) / max(t1 - t0, 1e-9)),
                    max(best.cpu, (s1 - s0) / max(c1 - c0, 1e-9) * cores))
    return best


def warm_up_batches(workers: int, prefetch: int) -> int:
    """Batches not timed: each process's first, and with workers the batches they prefetched
    meanwhile (timing them would count work done before the clock started)."""
    return 1 if workers == 0 else workers * (1 + prefetch)


def _epochs(cfg, epochs: int, warm_up: int, samples: list, rounds: int = 1) -> int:
    """At least ``epochs``, and enough for the warm-up and REPEATS runs of a round each."""
    per_epoch = max(len(samples) // cfg.batch_size, 1)
    return max(epochs, -(-(warm_up + rounds * REPEATS + 1) // per_epoch))


def vtp_batches(cfg, epochs: int):
    """The loader's batches over ``epochs`` epochs, normalised to float32 (counted: a uint8
    hand-over still ends in float32)."""
    from pipeline import build_dataloader
    from pipeline.decode import normalize_video

    loader = build_dataloader(cfg)
    for _ in range(epochs):
        for batch in loader:
            yield normalize_video(batch)


def read_samples(cfg) -> list[dict]:
    """Every sample of the shards, in index order (what the peers and the limit read)."""
    from pipeline.loader import build_source

    source = build_source(replace(cfg, format="mds", shuffle=False), clean_shared_memory=False)
    return [source[i] for i in range(len(source))]


def measure(cfg, epochs: int = 3, cores: int | None = None, peers: bool = True,
            peer_path: str | None = None) -> PipelineResult:
    """Measures vtp over ``cfg``'s shards, then the bare limit and the peers on the same work.

    Args:
        cfg: a DataConfig over MDS shards.
        epochs: passes over the shards (each draws new frames).
        cores: cores the CPU rates are converted to, and peer worker processes.
        peers: also run the bare limit and the peers (needs benchmarks/ and the bench extra).
        peer_path: shards the peers read instead, with the same keys and frames in another
            container (torchcodec and decord cannot read IVF, which declares no duration).
    """
    cores = cores or os.cpu_count() or 1
    samples = read_samples(cfg)
    warm_up = warm_up_batches(cfg.num_workers, cfg.prefetch)
    rounds = max(cfg.num_workers, 1)
    result = PipelineResult(timed(
        vtp_batches(cfg, _epochs(cfg, epochs, warm_up, samples, rounds)), warm_up, cores,
        rounds=rounds))
    if not peers:
        return result
    try:
        from benchmarks import peers as peer_loaders
    except ImportError as err:
        result.notes.append(f"peers and bare limit not run: {err} (run from a checkout)")
        return result
    warm_up = warm_up_batches(cores, cfg.prefetch)
    plans = peer_loaders.plans(cfg, samples, _epochs(cfg, epochs, warm_up, samples, cores))
    try:
        bare = peer_loaders.bare_limit(samples, plans[:REPEATS], cfg.image_size)
        rate = cores / bare["cpu_per_sample"]  # in-process, no start-up: cores in parallel
        result.bare, result.bare_frames = Rate(rate, rate), bare["frames_per_sample"]
        result.decode_only = cores / bare["decode_cpu_per_sample"]
    except ImportError as err:
        result.notes.append(f"bare limit not run: {err} (pip install -e '.[bench]')")
    if peer_path:
        twins = {s["key"]: s for s in read_samples(replace(cfg, path=peer_path))}
        samples = [twins[s["key"]] for s in samples]
    for name in peer_loaders.available_peers():
        loader = peer_loaders.peer_loader(name, cfg, samples, plans, cores)
        try:
            result.peers[name] = timed(loader, warm_up, cores, rounds=cores)
        except Exception as err:  # a peer that cannot read these shards is a finding, not a crash
            result.notes.append(f"{name}: failed on these shards ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:160]})")
            continue
        if result.decode_only and result.peers[name].cpu > 1.05 * result.decode_only:
            # every peer decodes the same frames with libavcodec: it cannot need less CPU
            result.notes.append(f"{name}: {result.peers[name].cpu:.1f} samples/s by CPU is "
                                f"more than libavcodec decoding alone ({result.decode_only:.1f})"
                                f": a timing artefact; rerun on an idle machine")
    return result


def report(result: PipelineResult, label: str) -> str:
    """A few lines a user can read: ours, the limit, the peers, the ratios."""
    lines = [f"vtp ({label}): {result.ours.wall:.1f} samples/s, {result.ours.cpu:.1f} by CPU time"]
    if result.bare:
        ratio = result.ours / result.bare
        lines.append(f"bare decoder limit (PyAV, {result.bare_frames:.1f} frames decoded per "
                     f"sample, + libswscale crop/resize/RGB, normalise): "
                     f"{result.bare.cpu:.1f} samples/s by CPU time; vtp / "
                     f"limit {ratio.wall:.2f} (wall), {ratio.cpu:.2f} (CPU); the decoder "
                     f"alone (no RGB, no resize): {result.decode_only:.1f} samples/s")
    for name, rate in result.peers.items():
        ratio = result.ours / rate
        lines.append(f"peer {name}: {rate.wall:.1f} samples/s, {rate.cpu:.1f} by CPU time; "
                     f"vtp / {name} {ratio.wall:.2f} (wall), {ratio.cpu:.2f} (CPU)")
    return "\n".join(lines + result.notes)
