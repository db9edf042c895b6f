"""vtp merge PART_DIR... --out DIR: join the outputs of a multi-machine `vtp shard` run.

Each part is the OUT of one `vtp shard --num-workers N --worker-index I`. The merge checks that
every part finished, that parts 0..N-1 are all there once, with the same settings, and that
no key appears twice; then it links the MDS group folders and WebDataset tars into DIR, writes
one MDS index.json over all of them and concatenates the manifests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

__all__ = ["MergeError", "merge", "add_arguments", "run"]


class MergeError(ValueError):
    """The parts cannot be merged: incomplete, missing, duplicated or inconsistent."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.storage import path_or_url

    parser.add_argument("parts", type=path_or_url, nargs="+",
                        help="output folders (or s3://bucket/prefix) of `vtp shard` parts")
    parser.add_argument("--out", type=path_or_url, required=True,
                        help="merged output folder or s3://bucket/prefix (new or empty)")


def _read_part(part: Path) -> tuple[dict, dict]:
    from tools.shard.writers import finished_groups

    if not part.is_dir():
        raise MergeError(f"{part} is not a folder (parts are `vtp shard --out` folders)")
    try:
        settings = json.loads((part / "settings.json").read_text())
        summary = json.loads((part / "summary.json").read_text())
    except FileNotFoundError as err:
        raise MergeError(f"{part} is not a finished `vtp shard` output "
                         f"({err.filename} missing)") from err
    except (OSError, ValueError) as err:
        raise MergeError(f"{part} is not a `vtp shard` output: {err}") from err
    keys = {"format", "transcode", "shard_size", "num_workers", "worker_index"}
    if not isinstance(settings, dict) or not isinstance(summary, dict) or keys - set(settings) \
            or "groups" not in summary:
        raise MergeError(f"{part} is not a `vtp shard` output: its settings.json or summary.json "
                         "lacks the fields a run writes")
    if not summary.get("complete") or len(finished_groups(part)) != summary["groups"]:
        raise MergeError(f"{part} is incomplete: rerun its `vtp shard` command to finish it")
    return settings, summary


def _check_parts(parts: list[Path]) -> list[dict]:
    settings = [_read_part(p)[0] for p in parts]
    same = ("format", "transcode", "shard_size", "num_workers")
    for p, s in zip(parts[1:], settings[1:], strict=True):
        diff = [k for k in same if s[k] != settings[0][k]]
        if diff:
            raise MergeError(f"{p} was made with other {', '.join(diff)} than {parts[0]}")
    indexes = Counter(s["worker_index"] for s in settings)
    expected = set(range(settings[0]["num_workers"]))
    twice = sorted(i for i, n in indexes.items() if n > 1)
    missing = sorted(expected - set(indexes))
    if twice or missing:
        raise MergeError(f"parts must be worker indexes 0..{len(expected) - 1} once each; "
                         f"given twice: {twice}, missing: {missing}")
    return settings


def _link_tree(src: Path, dst: Path) -> None:
    """Hard links when possible (no copy of the video bytes), copies across file systems."""
    try:
        shutil.copytree(src, dst, copy_function=os.link)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


def _link_file(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check_keys(rows: list[dict]) -> None:
    twice = [k for k, n in Counter(r["key"] for r in rows).items() if n > 1]
    if twice:
        raise MergeError(f"{len(twice)} key(s) appear more than once across parts, "
                         f"e.g. {twice[:5]}")


def _group_files(part: Path, name: str) -> list[Path]:
    """What one finished group consists of, relative to its part folder."""
    from tools.shard.writers import MARKERS

    names = [f"mds/{name}", f"wds/{name}.tar", f"wds/{name}.idx", f"{MARKERS}/{name}.json"]
    return [Path(n) for n in names if (part / n).exists()]


def merge(parts: list[Path], out: Path) -> dict:
    """Merges finished `vtp shard` parts into ``out``; returns the merged summary.

    Args:
        parts: output folders of `vtp shard --num-workers N --worker-index I`, one per I.
        out: the merged folder (must be new or empty).

    Raises:
        MergeError: a part is unfinished, missing or given twice, settings differ, a key
            appears twice, or ``out`` is not empty.
    """
    import pyarrow.parquet as pq

    from tools.shard.runner import FORMATS, finalize
    from tools.shard.writers import finished_groups

    if out.exists() and not out.is_dir():
        raise MergeError(f"--out {out} is a file, not a folder")
    settings = _check_parts(parts)
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"{out} is not empty")
    rows = [r for p in parts for r in pq.read_table(p / "manifest.parquet").to_pylist()]
    _check_keys(rows)
    groups = []
    for part in parts:
        for name in finished_groups(part):
            groups.append(name)
            for rel in _group_files(part, name):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                if (part / rel).is_dir():
                    _link_tree(part / rel, out / rel)
                else:
                    _link_file(part / rel, out / rel)
    summary = finalize(out, groups, FORMATS[settings[0]["format"]])
    if summary["inputs"] != len(rows) or not summary["complete"]:
        raise MergeError(f"merged manifest has {summary['inputs']} rows, "
                         f"the parts have {len(rows)}")
    summary["parts"] = [str(p) for p in parts]
    merged = {**settings[0], "worker_index": "merged"}
    (out / "settings.json").write_text(json.dumps(merged, indent=1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def merge_remote(parts: list[str], out: str) -> dict:
    """`vtp merge` for parts and output in buckets; returns the merged summary.

    Raises:
        MergeError: as the local merge, or the output prefix is not empty.
        StorageError: a bucket cannot be used.
    """
    from pipeline.storage import Uploader, check_access, client, copy, is_remote, join, list_keys
    from tools.shard.remote import group_of, pull_skeleton
    from tools.shard.writers import MARKERS

    if not all(is_remote(p) for p in [*parts, out]):
        raise MergeError("give either all parts and --out as s3:// locations, or none")
    for url in [*parts, out]:
        check_access(url)
    s3 = client(3)
    if list_keys(out, s3):
        raise MergeError(f"{out} is not empty")
    with tempfile.TemporaryDirectory(prefix="vtp-merge-") as scratch:
        local_parts = [Path(scratch) / f"part-{i}" for i in range(len(parts))]
        listings = [list_keys(url, s3) for url in parts]
        for url, local, keys in zip(parts, local_parts, listings, strict=True):
            pull_skeleton(url, local, keys, s3)
        summary = merge(local_parts, Path(scratch) / "out")  # every check of the local merge
        for url, keys, local in zip(parts, listings, local_parts, strict=True):
            done = {m.stem for m in (local / MARKERS).glob("*.json")}
            for key in keys:
                if group_of(key) in done and not key.startswith(f"{MARKERS}/"):
                    copy(join(url, key), join(out, key), s3)
        summary["parts"] = parts
        summary["out"] = out
        merged = Path(scratch) / "out"
        (merged / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        uploader = Uploader(merged, out)
        files = sorted(str(p.relative_to(merged)) for p in merged.rglob("*") if p.is_file())
        for name in sorted(files, key=lambda n: n == "summary.json"):  # summary last
            uploader.upload(name)
    return summary


def run(args: argparse.Namespace) -> int:
    from pipeline.storage import StorageError, is_remote
    from tools.errors import UsageError

    try:
        if any(is_remote(p) for p in [*args.parts, args.out]):  # hook: parts in buckets
            summary = merge_remote(args.parts, args.out)
        else:
            summary = merge(args.parts, args.out)
    except (MergeError, StorageError) as err:
        raise UsageError(str(err)) from err
    print(json.dumps(summary, indent=1))
    print(f"merge: {len(args.parts)} parts, {summary['inputs']} inputs = {summary['ok']} ok + "
          f"{summary['failed']} failed, {summary['mds_shards']} MDS shards -> {args.out}")
    return 0
