"""Shard writing: one MDS folder and/or one WebDataset tar (+ DALI .idx) per shard group.

A group is written under a temporary name and renamed into place; its completion marker
(``done/NAME.json``, holding the group's manifest rows) is written last, also by rename. A
group without a marker is unfinished by definition and is redone from scratch, and the MDS
``index.json`` is built only from groups that have a marker, so partial work is never read.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from pathlib import Path

from tools.shard.transcode import CODECS

FORMATS = {"mds": ("mds",), "wds": ("wds",), "both": ("mds", "wds")}
MDS_COLUMNS = {"key": "str", "video": "bytes", "caption": "str", "meta": "json"}
MARKERS = "done"
# Written into index.json per shard; readers copying shards from a remote verify them
# (Streaming's validate_hash), so damage is caught where it happened.
MDS_HASHES = ["sha1"]


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``path`` so that readers see the old file or the whole new one, never a part.

    One writer per folder, so a fixed temp name will do; unlike ``mkstemp`` (0600) the file
    then gets the same mode as the tars next to it (0644 under the usual umask).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_mds(folder: Path, samples: list[dict], size_limit: int = 1 << 26) -> None:
    """Writes one MDS group folder atomically (temp folder, then rename)."""
    from streaming import MDSWriter

    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    with MDSWriter(out=str(tmp), columns=MDS_COLUMNS, size_limit=size_limit,
                   hashes=MDS_HASHES) as writer:
        for sample in samples:
            writer.write({"key": sample["key"], "video": sample["video"],
                          "caption": sample["caption"], "meta": sample["meta"]})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: same bytes on rerun
    tar.addfile(info, io.BytesIO(data))


def idx_lines(tar_path: Path) -> list[str]:
    """DALI's ``readers.webdataset`` index (format ``v1.2``): one line per sample with
    ``ext data_offset size name`` for each member, as the ``wds2idx`` tool writes it."""
    groups: list[list[str]] = []
    last = None
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isreg():
                continue
            base = member.name.rsplit("/", 1)[-1]
            key, ext = base.split(".", 1)
            if key != last:
                groups.append([])
                last = key
            groups[-1].append(f"{ext} {member.offset_data} {member.size} {member.name}")
    return [f"v1.2 {len(groups)}", *(" ".join(g) for g in groups)]


def write_wds(tar_path: Path, samples: list[dict], codec: str) -> None:
    """Writes one WebDataset tar and its ``.idx`` atomically.

    The tar is written with ``tarfile`` rather than ``webdataset.TarWriter`` only because the
    index needs exact member offsets, which ``tarfile`` reads back directly.
    """
    ext = CODECS[codec].ext
    tmp = tar_path.with_name(f".tmp-{tar_path.name}")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for s in samples:
            _add_member(tar, f"{s['key']}.{ext}", s["video"])
            _add_member(tar, f"{s['key']}.txt", s["caption"].encode("utf-8"))
            _add_member(tar, f"{s['key']}.json", json.dumps(s["meta"], sort_keys=True).encode())
    idx = tar_path.with_suffix(".idx")
    if samples:
        atomic_write_text(idx, "\n".join(idx_lines(tmp)) + "\n")
    os.replace(tmp, tar_path)


def write_group(out: Path, name: str, samples: list[dict], rows: list[dict],
                formats: tuple[str, ...], codec: str) -> None:
    """Writes a whole shard group, then its completion marker.

    Args:
        out: the output folder (``mds/``, ``wds/`` and ``done/`` go under it).
        name: the group name, unique across a multi-machine run.
        samples: the ok samples (key, video, caption, meta), in input order.
        rows: the manifest rows of every input of this group (ok and failed).
        formats: any of ``mds``, ``wds``.
        codec: the output codec (picks the WDS member extension).
    """
    if "mds" in formats:
        write_mds(out / "mds" / name, samples)
    if "wds" in formats and samples:
        (out / "wds").mkdir(parents=True, exist_ok=True)
        write_wds(out / "wds" / f"{name}.tar", samples, codec)
    atomic_write_text(out / MARKERS / f"{name}.json", json.dumps({"name": name, "rows": rows}))


def finished_groups(out: Path) -> dict[str, list[dict]]:
    """Manifest rows of every group with a completion marker, by group name."""
    done = {}
    for marker in sorted((out / MARKERS).glob("*.json")):
        record = json.loads(marker.read_text())
        done[record["name"]] = record["rows"]
    return done


def clear_unfinished(out: Path, finished: set[str]) -> None:
    """Removes whatever an interrupted run left of groups without a completion marker."""
    for folder in out.glob("mds/*"):
        if folder.is_dir() and folder.name not in finished:
            shutil.rmtree(folder, ignore_errors=True)
    for path in [*out.glob("wds/*.tar"), *out.glob("wds/*.idx")]:
        if path.stem not in finished:
            path.unlink(missing_ok=True)


def clear_temporaries(out: Path) -> None:
    """Removes temp files and folders a killed run left (they are never part of a result)."""
    # Every dot name in these folders is a temporary of ours (.tmp-NAME, .index-tmp, .NAME.tmp).
    for leftover in [*out.glob("mds/.*"), *out.glob("wds/.*"), *out.glob(f"{MARKERS}/.*")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def write_mds_index(mds_dir: Path, groups: list[str]) -> int:
    """Writes ``mds_dir/index.json`` over the given group folders; returns the shard count.

    Uses streaming's own ``merge_index``, which prefixes each shard's basename with its group
    folder, into a scratch folder, then renames the result into place.
    """
    from streaming.base.util import merge_index

    indexes = [str(mds_dir / g / "index.json") for g in groups
               if json.loads((mds_dir / g / "index.json").read_text())["shards"]]
    scratch = mds_dir / ".index-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if indexes:
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # merge_index logs each temp folder it makes at WARNING
        try:
            merge_index(indexes, str(scratch))
        finally:
            logging.disable(previous)
    else:
        (scratch / "index.json").write_text(json.dumps({"version": 2, "shards": []}))
    shards = len(json.loads((scratch / "index.json").read_text())["shards"])
    os.replace(scratch / "index.json", mds_dir / "index.json")
    shutil.rmtree(scratch, ignore_errors=True)
    return shards
