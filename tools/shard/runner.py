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

from tools.shard.folder import prepare_out, scratch_folder
from tools.shard.inputs import WorkItem
from tools.shard.lifeline import die_with_parent
from tools.shard.transcode import TranscodeOptions
from tools.shard.worker import Result, process_batch
from tools.shard.writers import (
    FORMATS,
    clear_temporaries,
    clear_unfinished,
    finished_groups,
    write_group,
    write_mds_index,
)

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("bytes", pa.int64()),
    ("seconds", pa.float64()), ("shard", pa.string()), ("frames", pa.int64()),
    ("source", pa.string()),
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
        retry_failed: after finishing the planned groups, transcode again every input whose
            latest row failed; results go into new groups (appended shards), and each new row
            replaces the failed one in the manifest.
        on_group: called with a group's name once it is written and marked finished (a remote
            output uploads it; see tools/shard/remote.py).
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
    retry_failed: bool = False
    on_group: Callable[[str], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if min(self.workers, self.shard_size, self.num_workers, self.batch) < 1:
            raise ValueError("workers, shard_size, num_workers and batch must be >= 1")
        if not 0 <= self.worker_index < self.num_workers:
            raise ValueError(f"worker_index must be in [0, {self.num_workers}), "
                             f"got {self.worker_index}")


def partition(items: list[WorkItem], num_workers: int, worker_index: int) -> list[WorkItem]:
    """This machine's share: every ``num_workers``-th input, starting at ``worker_index``."""
    return items[worker_index::num_workers]


def plan_groups(items: list[WorkItem], config: ShardConfig) -> dict[str, list[WorkItem]]:
    """Fixed groups of ``shard_size`` inputs, named ``pPPP-GGGGG`` (unique across parts)."""
    size = config.shard_size
    return {f"p{config.worker_index:03d}-{g:05d}": items[start:start + size]
            for g, start in enumerate(range(0, len(items), size))}


def _fingerprint(items: list[WorkItem], config: ShardConfig) -> dict:
    """What a resumed run must share with the first one. Not workers, batch or timeout: they
    change how, not what; a rerun with a longer timeout and ``retry_failed`` redoes the
    samples that timed out."""
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
        path.write_text(json.dumps(settings, indent=1))


def _row(result: Result, shard: str, nbytes: int) -> dict:
    return {"key": result.key, "status": result.status, "reason": result.reason, "bytes": nbytes,
            "seconds": round(result.seconds, 3), "shard": shard if result.status == "ok" else "",
            "frames": result.meta.get("frames", 0), "source": result.source}


class _Preload:
    """Imports a module on a thread while the pool starts (streaming imports torch: seconds).

    The main thread must `wait` before it imports the module itself: two threads importing
    torch at once abort the process (pybind11 registers torch's c10d types twice), which
    is what a rerun into a finished folder hit, having no work to hide the import behind.
    """

    def __init__(self, name: str | None) -> None:
        self.thread = None
        if name is not None:
            self.thread = threading.Thread(target=importlib.import_module, args=(name,),
                                           daemon=True)
            self.thread.start()

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()


def _pool_results(batches: list[list[WorkItem]], work: Callable,
                  workers: int) -> Iterator[list[Result]]:
    """Results in input order. At most two tasks per worker are in flight, so memory stays
    bounded and the pool never runs far ahead of the writer (a kill loses little work)."""
    # spawn: the parent may hold DALI or torch threads, which a forked child must not inherit.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
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
    tmp = scratch_folder(config.out)
    tmp.mkdir(parents=True, exist_ok=True)
    work = partial(process_batch, options=config.transcode, tmp_root=str(tmp))
    return results_in_order(items, work, config.workers, config.batch)


def _write(name: str, results: list[Result], config: ShardConfig,
           slots: list[str] | None) -> list[dict]:
    ok = [r for r in results if r.status == "ok"]
    samples = [{"key": r.key, "video": r.data, "caption": r.caption, "meta": r.meta} for r in ok]
    rows = [_row(r, name, len(r.data)) for r in results]
    for row, slot in zip(rows, slots or [], strict=False):
        row["replaces"] = slot
    write_group(config.out, name, samples, rows, FORMATS[config.format], config.transcode.codec)
    if config.on_group is not None:  # hook: remote outputs upload the group here
        config.on_group(name)
    return rows


def _run_groups(todo: dict[str, list[WorkItem]], config: ShardConfig, bar: tqdm,
                slots: dict[str, list[str]], preload: _Preload) -> None:
    """Writes each group as soon as its last result arrives (results come in input order).

    ``slots`` names, for the groups of a retry, the row each of their rows replaces."""
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
            preload.wait()
            _write(name, pending, config, slots.get(name))
            name, pending = next(names, None), []


def latest_rows(done: dict[str, list[dict]], groups: list[str]) -> list[dict]:
    """The manifest rows of ``groups`` in input order, each retried row in place of the row
    it replaces (``replaces``: ``GROUP/POSITION`` of the planned group)."""
    rows: list[dict] = []
    where: dict[str, int] = {}
    for name in groups:
        for position, row in enumerate(done.get(name, [])):
            slot = row.get("replaces")
            if slot in where:
                rows[where[slot]] = row
            else:
                where[slot or f"{name}/{position}"] = len(rows)
                rows.append(row)
    return rows


def _retry_plan(groups: dict[str, list[WorkItem]], done: dict[str, list[dict]],
                config: ShardConfig) -> tuple[dict[str, list[WorkItem]], dict[str, list[str]]]:
    """New groups (``pPPP-rRRR-GGGGG``, one round per rerun) for every input whose latest
    row failed, and the slot each of their inputs replaces."""
    latest: dict[str, dict] = {}
    for name in sorted(done):
        for position, row in enumerate(done[name]):
            latest[row.get("replaces") or f"{name}/{position}"] = row
    failed = [slot for slot, row in latest.items() if row["status"] != "ok"
              and slot.split("/")[0] in groups]
    rounds = [int(n.split("-")[1][1:]) for n in done if n.split("-")[1].startswith("r")]
    prefix = f"p{config.worker_index:03d}-r{max(rounds, default=0) + 1:03d}"
    size, todo, slots = config.shard_size, {}, {}
    for g, start in enumerate(range(0, len(failed), size)):
        chunk = failed[start:start + size]
        todo[f"{prefix}-{g:05d}"] = [groups[s.split("/")[0]][int(s.split("/")[1])] for s in chunk]
        slots[f"{prefix}-{g:05d}"] = chunk
    return todo, slots


def shard(items: list[WorkItem], config: ShardConfig) -> dict:
    """Shards ``items`` (the whole input; this machine takes its partition) into ``config.out``.

    Finished groups of an earlier run are kept, unfinished ones redone. Returns the summary
    (also written to ``out/summary.json``).

    Raises:
        SettingsMismatch: ``out`` holds a run over other inputs or with other settings.
    """
    start = time.perf_counter()
    mine = partition(items, config.num_workers, config.worker_index)
    prepare_out(config.out)
    _check_settings(config.out, _fingerprint(mine, config))
    groups = plan_groups(mine, config)
    done = finished_groups(config.out)
    todo = {name: group for name, group in groups.items() if name not in done}
    retry, slots = _retry_plan(groups, done, config) if config.retry_failed else ({}, {})
    clear_temporaries(config.out)
    clear_unfinished(config.out, set(done))
    resumed = sum(len(groups[n]) for n in groups if n in done)
    preload = _Preload("streaming" if "mds" in FORMATS[config.format] and (todo or retry) else None)
    with tqdm(total=len(mine) + sum(map(len, retry.values())), initial=resumed, desc="shard",
              unit="video", disable=not config.progress) as bar:
        _run_groups({**todo, **retry}, config, bar, slots, preload)
    preload.wait()
    shutil.rmtree(scratch_folder(config.out), ignore_errors=True)
    retried = sorted(n for n in finished_groups(config.out) if n not in groups)
    summary = finalize(config.out, [*groups, *retried], FORMATS[config.format],
                       complete=list(groups))
    summary.update(resumed_inputs=resumed, retried_inputs=sum(map(len, retry.values())),
                   timeout=config.transcode.timeout, seconds=round(time.perf_counter() - start, 2))
    summary["videos_per_second"] = round(len(mine) / max(summary["seconds"], 1e-9), 2)
    (config.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def finalize(out: Path, groups: list[str], formats: tuple[str, ...],
             complete: list[str] | None = None) -> dict:
    """Writes ``mds/index.json`` and ``manifest.parquet`` from the finished groups.

    Args:
        out: the output folder.
        groups: every group, in order (retry groups after the groups they retry).
        formats: any of ``mds``, ``wds``.
        complete: the groups that must be finished for the run to be complete (default: all).

    Returns:
        counts: inputs, ok, failed, groups, plus reasons grouped by their first words.
    """
    done = finished_groups(out)
    finished = [g for g in groups if g in done]
    rows = latest_rows(done, finished)
    shards = write_mds_index(out / "mds", finished) if "mds" in formats else 0
    tmp = out / ".manifest.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)
    os.replace(tmp, out / "manifest.parquet")
    ok = sum(r["status"] == "ok" for r in rows)
    required = groups if complete is None else complete
    return {"out": str(out), "complete": all(g in done for g in required),
            "planned_groups": len(required), "groups": len(finished),
            "inputs": len(rows), "ok": ok, "failed": len(rows) - ok, "mds_shards": shards,
            "bytes": sum(r["bytes"] for r in rows), "failure_reasons": reason_counts(rows)}


def reason_kind(reason: str) -> str:
    """The kind of a reason: the text before its first ``": "`` outside quotes and brackets,
    so a key or path with a colon in it ('a:b', file:/x) is never cut in two."""
    depth, quote = 0, ""
    for i, char in enumerate(reason):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        elif char == ":" and depth == 0 and reason[i + 1:i + 2] in (" ", ""):
            return reason[:i].strip() or "no reason"
    return reason.strip() or "no reason"


def reason_counts(rows: list[dict]) -> dict[str, int]:
    """How many failures per kind of reason (see `reason_kind`)."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["status"] != "ok":
            kind = reason_kind(row["reason"])
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
