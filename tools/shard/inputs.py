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

from tools.errors import InputError

if TYPE_CHECKING:  # pyarrow is imported where it is used: pool workers never need it
    import pyarrow as pa


MAX_KEY_BYTES = 200  # KEY.json and friends must fit a 255-byte file name


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


def check_key(key: str) -> str | None:
    """Why ``key`` cannot name a sample, or None. Keys become tar member stems (no '/' or '.')
    and words of a DALI index line (no white space)."""
    if not key or not key.strip():
        return "unsafe videoid: empty"
    if len(key.encode("utf-8", "replace")) > MAX_KEY_BYTES:  # it becomes a file name stem
        return f"unsafe videoid: {len(key)} characters, more than {MAX_KEY_BYTES} bytes"
    bad = [c for c in ("/", "\\", ".", "\0") if c in key]
    if bad or any(ord(c) < 32 for c in key):
        return f"unsafe videoid: {key!r} contains {bad or 'control characters'}"
    if any(c.isspace() for c in key):  # DALI's .idx lines are split at white space
        return f"unsafe videoid: {key!r} contains white space"
    return None


def check_row(page_dir: str, videoid: str) -> str | None:
    """Why a manifest row's ``page_dir`` and ``videoid`` cannot name ``page_dir/videoid.mp4``
    under a video root (local or a bucket), or None."""
    return check_key(videoid) or _unsafe_component(page_dir, "page_dir")


def _unsafe_component(part: str, field: str) -> str | None:
    if not part or part.strip() != part or "\0" in part:
        return f"unsafe {field}: {part!r}"
    steps = part.replace("\\", "/").split("/")
    if part.startswith(("/", "\\")) or any(p in ("..", ".", "") for p in steps):
        return f"unsafe {field}: {part!r} is absolute or contains '..'"
    return None


def video_path(root: Path, page_dir: str, videoid: str) -> tuple[Path | None, str | None]:
    """``{root}/{page_dir}/{videoid}.mp4`` if it is a file inside ``root``, else a reason.

    Symlinks are resolved first, so a link that points outside the root is refused.
    """
    reason = check_row(page_dir, videoid)
    if reason:
        return None, reason
    real_root = root.resolve()
    try:
        return _regular_file_inside(real_root, f"{page_dir}/{videoid}.mp4")
    except OSError as err:  # a page_dir over the file system's name limit, a loop of links
        return None, (f"unusable path: {err.strerror or err} (page_dir has {len(page_dir)} "
                      f"characters, videoid {len(videoid)})")


def _regular_file_inside(real_root: Path, relative: str) -> tuple[Path | None, str | None]:
    """``real_root/relative`` with links resolved if it is a regular file inside the (resolved)
    root, else a reason; OSError from the file system is the caller's to word."""
    real = (real_root / relative).resolve()
    if not real.is_relative_to(real_root):
        return None, f"unsafe path: {relative} resolves outside the video root"
    if not real.exists():
        return None, "missing file"
    if not real.is_file():
        return None, "not a regular file"
    return real, None


def confined_file(root: Path, relative: str,
                  field: str = "video") -> tuple[Path | None, str | None]:
    """``root/relative`` if it is a regular file inside ``root``, else a reason (as video_path,
    for inputs that name a whole relative path, such as the test json of `vtp eval`)."""
    reason = _unsafe_component(relative, field)
    if reason:
        return None, reason
    real_root = root.resolve()
    try:
        return _regular_file_inside(real_root, relative)
    except OSError as err:  # a name too long for the file system, a loop of links
        return None, f"unreadable path: {err.strerror or err}"


def read_manifest(path: Path) -> pa.Table:
    """The manifest (a WebVid table, raw or cleaned) with its ids and captions as strings
    (videoids must stay strings, e.g. '007')."""
    from tools.webvid import read_table

    try:
        table = read_table(path)
    except InputError as err:
        raise InputError(f"cannot read manifest: {err}") from err
    missing = {"videoid", "page_dir"} - set(table.column_names)
    if missing or not {"caption", "name"} & set(table.column_names):
        raise InputError(f"{path.name} needs columns videoid, page_dir and caption or name; "
                         f"has {table.column_names}")
    return table


def manifest_items(path: Path, root: Path | str, locate=None) -> tuple[list[WorkItem], int]:
    """Work items for the rows of a manifest, and how many rows it dropped upstream.

    Rows with a ``drop_reason`` (from `vtp clean`) are not sharded; ``caption`` is used when
    present, else the raw WebVid ``name``. ``locate(root, page_dir, videoid)`` finds a row's
    video (default ``video_path``; tools/shard/remote.py has the one for a bucket).
    """
    locate = locate or video_path
    table = read_manifest(path)
    rows = table.to_pylist()
    kept = [r for r in rows if not r.get("drop_reason")]
    text = "caption" if "caption" in table.column_names else "name"
    items = []
    for row in kept:
        videoid, page_dir = str(row["videoid"] or ""), str(row["page_dir"] or "")
        real, reason = locate(root, page_dir, videoid)
        items.append(WorkItem(
            key=videoid, caption=str(row.get(text) or ""), source=f"{page_dir}/{videoid}.mp4",
            path=str(real) if real else "", error=reason))
    return items, len(rows) - len(kept)


def _split_member(name: str) -> tuple[str, str]:
    """(key, extension) the way webdataset splits a member name: at the first dot of the
    basename."""
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
    of failed downloads) is a failed item whose reason quotes video2dataset's status. A tar cut
    short (a killed download job) keeps the samples before the cut, with their captions and
    keys; the sample the cut runs through fails, and one more failed row records the loss.
    """
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    errors: dict[str, str] = {}
    texts: dict[str, tuple[dict, str]] = {}
    try:
        with tarfile.open(tar_path) as tar:
            cut = _list_members(tar, samples, errors)
            for key, members in samples.items():
                if key not in errors:
                    texts[key], reason = _read_text(tar, members)
                    if reason:
                        errors[key] = reason
    except (tarfile.TarError, OSError, EOFError) as err:
        return [WorkItem(key=f"tar-{tar_path.stem}", caption="", source=tar_path.name,
                         error=f"unreadable tar: {err}")]
    if cut and samples:
        _fail_cut_sample(samples, errors)
    items = [_tar_item(tar_path, key, members, errors.get(key), texts.get(key, ({}, "")))
             for key, members in samples.items()]
    if cut:
        items.append(WorkItem(key=f"tar-{tar_path.stem}", caption="", source=tar_path.name,
                              error=f"unreadable tar: {cut}; samples after this point are lost"))
    return items


def _list_members(tar: tarfile.TarFile, samples: dict, errors: dict) -> str | None:
    """Lists the samples; returns why the listing stopped early, or None at a proper end."""
    try:
        for member in tar:
            key, ext = _split_member(member.name)
            if not ext:
                continue
            samples.setdefault(key, {})[ext] = member
            reason = _member_error(member)
            if reason and ext in ("mp4", "txt", "json"):
                errors.setdefault(key, reason)
    except (tarfile.TarError, OSError, EOFError) as err:
        return str(err)
    # tarfile stops quietly at a header cut in two: only the end-of-archive marker (two
    # zero blocks) tells a whole tar from one cut at a member boundary or inside a header.
    tar.fileobj.seek(tar.offset)
    tail = tar.fileobj.read(1024)
    if len(tail) < 1024 or tail.strip(b"\0"):
        return (f"it ends at byte {tar.offset + len(tail)} without its end-of-archive marker "
                "(cut short?)")
    return None


def _fail_cut_sample(samples: dict[str, dict], errors: dict[str, str]) -> None:
    """The last sample listed before a cut fails if it lacks a member the others have: its
    caption or its json (with the videoid) may be what was lost."""
    last = next(reversed(samples))
    others = {ext for key, members in samples.items() if key != last for ext in members}
    missing = sorted((others or {"txt", "json"}) - set(samples[last]))
    if missing and (others or not {"txt", "json"} & set(samples[last])):
        errors.setdefault(last, f"truncated tar: the tar is cut inside this sample "
                                f"(its {', '.join(missing)} lost)")


def _read_text(tar: tarfile.TarFile,
               members: dict[str, tarfile.TarInfo]) -> tuple[tuple[dict, str], str | None]:
    """((json meta, caption), None), or a reason when a text member cannot be read whole."""
    raw = {}
    for ext in ("json", "txt"):
        if ext in members:
            try:
                raw[ext] = tar.extractfile(members[ext]).read()
            except (tarfile.TarError, OSError, EOFError) as err:
                return ({}, ""), f"truncated tar: its {ext} member cannot be read ({err})"
            if len(raw[ext]) != members[ext].size:
                return ({}, ""), f"truncated tar: its {ext} member is cut short"
    meta = {}
    if "json" in raw:
        try:
            meta = json.loads(raw["json"].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            meta = {}
    meta = meta if isinstance(meta, dict) else {}
    caption = raw["txt"].decode("utf-8", "replace").strip() if "txt" in raw else ""
    return (meta, caption or str(meta.get("caption") or "")), None


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
        error = f"no mp4 in tar: video2dataset status {status}{f' ({message})' if message else ''}"
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
            item = WorkItem(item.key, item.caption, item.source,
                            error="duplicate key: an earlier input has it")
        seen.add(item.key)
        out.append(item)
    return out

