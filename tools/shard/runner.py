"""The sharding run: partition, group, transcode in a process pool, write, resume, summarise.

Samples are assigned to shard groups up front, by input order after partitioning, so each
group is an independent unit of work: complete (it has a marker) or redone from scratch. A
rerun with the same input and settings therefore ends with the same keys whatever point an
earlier run was killed at.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from tools.shard.inputs import WorkItem
from tools.shard.transcode import TranscodeOptions
from tools.shard.worker import Result, process_batch
from tools.shard.writers import (
    FORMATS,
    clear_group,
    clear_temporaries,
    finished_groups,
    write_group,
    write_mds_index,
)

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("bytes", pa.int64()),
    ("seconds", pa.float64()), ("shard", pa.string()), ("frames", pa.int64()), ("source", pa.string()),
])


class SettingsMismatch(ValueError):
    """The output folder holds a run with other inputs or settings; resuming would mix them."""


@dataclass(frozen=True)
class ShardConfig:
    """How a sharding run is laid out.

    Args:
        out: output folder.
        format: ``mds``, ``wds`` or ``both``.
        transcode: the per-sample output format.
        workers: processes transcoding in parallel on this machine.
        shard_size: inputs per shard group (a group is the unit of resume).
        num_workers: machines sharing the input (each writes its own ``out``).
        worker_index: which part of the input this machine does, 0-based.
        progress: show a tqdm bar.
        batch: samples per pool task; their outputs are decode-checked by one ffmpeg process.
    """

    out: Path
    format: str = "both"
    transcode: TranscodeOptions = field(default_factory=TranscodeOptions)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shard_size: int = 256
    num_workers: int = 1
    worker_index: int = 0
    progress: bool = True
    batch: int = 8

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if min(self.workers, self.shard_size, self.num_workers, self.batch) < 1:
            raise ValueError("workers, shard_size, num_workers and batch must be >= 1")
        if not 0 <= self.worker_index < self.num_workers:
            raise ValueError(f"worker_index must be in [0, {self.num_workers}), got {self.worker_index}")


def partition(items: list[WorkItem], num_workers: int, worker_index: int) -> list[WorkItem]:
    """This machine's share: every ``num_workers``-th input, starting at ``worker_index``."""
    return items[worker_index::num_workers]


def plan_groups(items: list[WorkItem], config: ShardConfig) -> dict[str, list[WorkItem]]:
    """Fixed groups of ``shard_size`` inputs, named ``pPPP-GGGGG`` (unique across parts)."""
    size = config.shard_size
    return {f"p{config.worker_index:03d}-{g:05d}": items[start:start + size]
            for g, start in enumerate(range(0, len(items), size))}


def _fingerprint(items: list[WorkItem], config: ShardConfig) -> dict:
    """What a resumed run must share with the first one (not workers or timeout)."""
    digest = hashlib.sha256(json.dumps([(i.key, i.source) for i in items]).encode()).hexdigest()
    transcode = {k: v for k, v in asdict(config.transcode).items() if k != "timeout"}
    if transcode.get("frame_step") == 1:  # a folder sharded before the option resumes as it was
        del transcode["frame_step"]
    return {"inputs": len(items), "inputs_sha256": digest, "format": config.format,
            "transcode": transcode, "shard_size": config.shard_size,
            "num_workers": config.num_workers, "worker_index": config.worker_index}


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise SettingsMismatch(f"{out} holds a run with different {', '.join(changed)}; "
                                   "use another --out or remove it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1))


def _row(result: Result, shard: str, nbytes: int) -> dict:
    return {"key": result.key, "status": result.status, "reason": result.reason, "bytes": nbytes,
            "seconds": round(result.seconds, 3), "shard": shard if result.status == "ok" else "",
            "frames": result.meta.get("frames", 0), "source": result.source}


def _pool_results(batches: list[list[WorkItem]], work: Callable, workers: int) -> Iterator[list[Result]]:
    """Results in input order. At most two tasks per worker are in flight, so memory stays
    bounded and the pool never runs far ahead of the writer (a kill loses little work)."""
    # spawn: the parent may hold DALI or torch threads, which a forked child must not inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.submit(work, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _isolated(batch: list[WorkItem], work: Callable) -> list[Result]:
    """Runs a batch alone, then its samples one by one, to pin a crash (a decoder's segfault)
    on the sample that caused it."""
    try:
        return next(_pool_results([batch], work, 1))
    except BrokenProcessPool:
        if len(batch) > 1:
            return [r for item in batch for r in _isolated([item], work)]
        item = batch[0]
        return [Result(item.key, item.caption, item.source,
                       reason="worker crashed: the process died while transcoding or checking")]


def results_in_order(items: list[WorkItem], work: Callable, workers: int,
                     batch: int = 1) -> Iterator[Result]:
    """Results of ``work(list of items)`` for every item, in order, ``batch`` items per task on
    ``workers`` processes. A crashed worker fails only the sample it was on; the run goes on
    with a fresh pool."""
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    done = 0
    while done < len(batches):
        try:
            for results in _pool_results(batches[done:], work, workers):
                done += 1
                yield from results
        except BrokenProcessPool:
            # Any in-flight task may hold the culprit: the next one in order runs alone.
            yield from _isolated(batches[done], work)
            done += 1


def _results(groups: dict[str, list[WorkItem]], config: ShardConfig) -> Iterator[Result]:
    items = [item for group in groups.values() for item in group]
    (config.out / "tmp").mkdir(parents=True, exist_ok=True)
    work = partial(process_batch, options=config.transcode, tmp_root=str(config.out / "tmp"))
    return results_in_order(items, work, config.workers, config.batch)


def _write(name: str, results: list[Result], config: ShardConfig) -> list[dict]:
    ok = [r for r in results if r.status == "ok"]
    samples = [{"key": r.key, "video": r.data, "caption": r.caption, "meta": r.meta} for r in ok]
    rows = [_row(r, name, len(r.data)) for r in results]
    write_group(config.out, name, samples, rows, FORMATS[config.format], config.transcode.codec)
    return rows


def _run_groups(todo: dict[str, list[WorkItem]], config: ShardConfig, bar: tqdm) -> None:
    """Writes each group as soon as its last result arrives (results come in input order)."""
    if not todo:
        return
    names = iter(todo)
    name, pending, failed = next(names), [], 0
    for result in _results(todo, config):
        pending.append(result)
        failed += result.status != "ok"
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)
        if len(pending) == len(todo[name]):
            _write(name, pending, config)
            name, pending = next(names, None), []


def shard(items: list[WorkItem], config: ShardConfig) -> dict:
    """Shards ``items`` (the whole input; this machine takes its partition) into ``config.out``.

    Finished groups of an earlier run are kept, unfinished ones redone. Returns the summary
    (also written to ``out/summary.json``).

    Raises:
        SettingsMismatch: ``out`` holds a run over other inputs or with other settings.
    """
    start = time.perf_counter()
    mine = partition(items, config.num_workers, config.worker_index)
    _check_settings(config.out, _fingerprint(mine, config))
    groups = plan_groups(mine, config)
    done = finished_groups(config.out)
    todo = {name: group for name, group in groups.items() if name not in done}
    clear_temporaries(config.out)
    for name in todo:
        clear_group(config.out, name)
    resumed = sum(len(groups[n]) for n in groups if n in done)
    if "mds" in FORMATS[config.format]:  # streaming imports torch: seconds, better spent in parallel
        threading.Thread(target=importlib.import_module, args=("streaming",), daemon=True).start()
    with tqdm(total=len(mine), initial=resumed, desc="shard", unit="video",
              disable=not config.progress) as bar:
        _run_groups(todo, config, bar)
    shutil.rmtree(config.out / "tmp", ignore_errors=True)
    summary = finalize(config.out, list(groups), FORMATS[config.format])
    summary.update(resumed_inputs=resumed, seconds=round(time.perf_counter() - start, 2))
    summary["videos_per_second"] = round(len(mine) / max(summary["seconds"], 1e-9), 2)
    (config.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def finalize(out: Path, groups: list[str], formats: tuple[str, ...]) -> dict:
    """Writes ``mds/index.json`` and ``manifest.parquet`` from the finished groups.

    Returns:
        counts: inputs, ok, failed, groups, plus reasons grouped by their first words.
    """
    done = finished_groups(out)
    finished = [g for g in groups if g in done]
    rows = [row for g in finished for row in done[g]]
    shards = write_mds_index(out / "mds", finished) if "mds" in formats else 0
    tmp = out / ".manifest.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)
    os.replace(tmp, out / "manifest.parquet")
    ok = sum(r["status"] == "ok" for r in rows)
    return {"out": str(out), "complete": len(finished) == len(groups), "groups": len(groups),
            "inputs": len(rows), "ok": ok, "failed": len(rows) - ok, "mds_shards": shards,
            "bytes": sum(r["bytes"] for r in rows), "failure_reasons": reason_counts(rows)}


def reason_counts(rows: list[dict]) -> dict[str, int]:
    """How many failures per kind of reason (the text before the first ':')."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["status"] != "ok":
            kind = row["reason"].split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
