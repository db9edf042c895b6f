"""Turns a manifest (WebVid CSV, `vtp clean`/`vtp subset` parquet) or video2dataset tars into
work items, building every path so that it cannot leave the video root.

Remote ``contentUrl``s are never used: a video that is not under the root is a failed sample.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported where it is used: pool workers never need it
    import pyarrow as pa


@dataclass(frozen=True)
class WorkItem:
    """One input sample.

    Args:
        key: the sample key (videoid); also the WebDataset member stem.
        caption: the text that goes with it.
        source: where it came from, for ``meta.source`` (relative path or ``tar:member``).
        path: the video file to read (for tars: the tar itself).
        offset: byte offset of the video inside ``path`` (tars), else None.
        size: byte length of the video inside ``path`` (tars), else None.
        error: a reason known before any work, e.g. an unsafe path; the sample then fails.
    """

    key: str
    caption: str
    source: str
    path: str = ""
    offset: int | None = None
    size: int | None = None
    error: str | None = None


class InputError(ValueError):
    """The input as a whole is unusable (missing columns, no tars)."""


def check_key(key: str) -> str | None:
    """Why ``key`` cannot name a sample, or None. Keys become tar member stems, so no '/' or '.'."""
    if not key or not key.strip():
        return "unsafe videoid: empty"
    bad = [c for c in ("/", "\\", ".", "\0") if c in key]
    if bad or any(ord(c) < 32 for c in key):
        return f"unsafe videoid: {key!r} contains {bad or 'control characters'}"
    return None


def _unsafe_component(part: str, field: str) -> str | None:
    if not part or part.strip() != part or "\0" in part:
        return f"unsafe {field}: {part!r}"
    if part.startswith(("/", "\\")) or any(p in ("..", ".", "") for p in part.replace("\\", "/").split("/")):
        return f"unsafe {field}: {part!r} is absolute or contains '..'"
    return None


def video_path(root: Path, page_dir: str, videoid: str) -> tuple[Path | None, str | None]:
    """``{root}/{page_dir}/{videoid}.mp4`` if it is a file inside ``root``, else a reason.

    Symlinks are resolved first, so a link that points outside the root is refused.
    """
    reason = check_key(videoid) or _unsafe_component(page_dir, "page_dir")
    if reason:
        return None, reason
    real_root = root.resolve()
    candidate = real_root / page_dir / f"{videoid}.mp4"
    real = candidate.resolve()
    if not real.is_relative_to(real_root):
        return None, f"unsafe path: {page_dir}/{videoid}.mp4 resolves outside the video root"
    if not real.exists():
        return None, "missing file"
    if not real.is_file():
        return None, "not a regular file"
    return real, None


def confined_file(root: Path, relative: str, field: str = "video") -> tuple[Path | None, str | None]:
    """``root/relative`` if it is a regular file inside ``root``, else a reason (as video_path,
    for inputs that name a whole relative path, such as the test json of `vtp eval`)."""
    reason = _unsafe_component(relative, field)
    if reason:
        return None, reason
    real_root = root.resolve()
    try:
        real = (real_root / relative).resolve()
        if not real.is_relative_to(real_root):
            return None, f"unsafe path: {relative} resolves outside the video root"
        if not real.exists():
            return None, "missing file"
        if not real.is_file():
            return None, "not a regular file"
    except OSError as err:  # a name too long for the file system, a loop of links
        return None, f"unreadable path: {err.strerror or err}"
    return real, None


def read_manifest(path: Path) -> pa.Table:
    """The manifest as a table of strings (videoids must stay strings, e.g. '007')."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.suffix == ".csv":
        names = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).column_names
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False))
    else:
        raise InputError(f"manifest must be .csv or .parquet, got {path.name}")
    missing = {"videoid", "page_dir"} - set(table.column_names)
    if missing or not {"caption", "name"} & set(table.column_names):
        raise InputError(f"{path.name} needs columns videoid, page_dir and caption or name; "
                         f"has {table.column_names}")
    return table


def manifest_items(path: Path, root: Path) -> tuple[list[WorkItem], int]:
    """Work items for the rows of a manifest, and how many rows it dropped upstream.

    Rows with a ``drop_reason`` (from `vtp clean`) are not sharded; ``caption`` is used when
    present, else the raw WebVid ``name``.
    """
    table = read_manifest(path)
    rows = table.to_pylist()
    kept = [r for r in rows if not r.get("drop_reason")]
    text = "caption" if "caption" in table.column_names else "name"
    items = []
    for row in kept:
        videoid, page_dir = str(row["videoid"] or ""), str(row["page_dir"] or "")
        real, reason = video_path(root, page_dir, videoid)
        items.append(WorkItem(
            key=videoid, caption=str(row.get(text) or ""), source=f"{page_dir}/{videoid}.mp4",
            path=str(real) if real else "", error=reason))
    return items, len(rows) - len(kept)


def _split_member(name: str) -> tuple[str, str]:
    """(key, extension) the way webdataset splits a member name: at the first dot of the basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def _member_error(member: tarfile.TarInfo) -> str | None:
    if member.name.startswith("/") or ".." in member.name.split("/"):
        return f"unsafe tar member: {member.name!r} is absolute or contains '..'"
    if not member.isreg():
        return f"unsafe tar member: {member.name!r} is not a regular file"
    return None


def tar_items(tar_path: Path) -> list[WorkItem]:
    """Work items for the samples of one video2dataset tar.

    The video is read later straight from its offset in the tar: nothing is extracted under a
    name taken from the archive. A sample without an mp4 (video2dataset keeps the txt and json
    of failed downloads) is a failed item whose reason quotes video2dataset's status.
    """
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    errors: dict[str, str] = {}
    broken = None
    try:
        with tarfile.open(tar_path) as tar:
            _list_members(tar, samples, errors)
            texts = {k: _read_text(tar, m) for k, m in samples.items() if k not in errors}
    except (tarfile.TarError, OSError, EOFError) as err:
        # A tar cut short (a killed download job): keep what was listed, record the rest as lost.
        texts = {k: ({}, "") for k in samples}
        broken = WorkItem(key=f"tar-{tar_path.stem}", caption="", source=tar_path.name,
                          error=f"unreadable tar: {err}; samples after this point are lost")
    items = [_tar_item(tar_path, key, members, errors.get(key), texts.get(key, ({}, "")))
             for key, members in samples.items()]
    return items + ([broken] if broken else [])


def _list_members(tar: tarfile.TarFile, samples: dict, errors: dict) -> None:
    for member in tar:
        key, ext = _split_member(member.name)
        if not ext:
            continue
        samples.setdefault(key, {})[ext] = member
        reason = _member_error(member)
        if reason and ext in ("mp4", "txt", "json"):
            errors.setdefault(key, reason)


def _read_text(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> tuple[dict, str]:
    meta = {}
    if "json" in members:
        try:
            meta = json.loads(tar.extractfile(members["json"]).read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            meta = {}
    caption = ""
    if "txt" in members:
        caption = tar.extractfile(members["txt"]).read().decode("utf-8", "replace").strip()
    return (meta if isinstance(meta, dict) else {}), caption or str(meta.get("caption") or "")


def _tar_item(tar_path: Path, member_key: str, members: dict, error: str | None,
              text: tuple[dict, str]) -> WorkItem:
    meta, caption = text
    key = str(meta.get("videoid") or member_key.rsplit("/", 1)[-1])
    source = f"{tar_path.name}:{member_key}"
    error = error or check_key(key)
    video = next((members[e] for e in ("mp4",) if e in members), None)
    if error is None and video is None:
        status = meta.get("status") or "unknown"
        message = meta.get("error_message")
        error = f"no mp4 in tar (video2dataset status: {status}{f': {message}' if message else ''})"
    if error:
        return WorkItem(key=key, caption=caption, source=source, error=error)
    return WorkItem(key=key, caption=caption, source=source, path=str(tar_path.resolve()),
                    offset=video.offset_data, size=video.size)


def v2d_items(tar_dir: Path) -> list[WorkItem]:
    """Work items from every ``*.tar`` in ``tar_dir``, in name order."""
    tars = sorted(p for p in tar_dir.glob("*.tar") if p.is_file())
    if not tars:
        raise InputError(f"no .tar files in {tar_dir}")
    return [item for tar in tars for item in tar_items(tar)]


def mark_duplicates(items: list[WorkItem]) -> list[WorkItem]:
    """Second and later items with the same key fail: a key must name one sample."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.key in seen and item.error is None:
            item = WorkItem(item.key, item.caption, item.source, error="duplicate key: an earlier input has it")
        seen.add(item.key)
        out.append(item)
    return out

