"""The test json of `vtp eval`: MSR-VTT-style entries -> shard work items, paths confined.

Light on imports (no torch), so `vtp eval` refuses a bad json before loading any model.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

__all__ = ["test_items", "check_usable"]


def _entries(json_path: Path) -> list[dict]:
    try:
        entries = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the test json {json_path}: {err}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path} is not valid json: {err}") from err
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{json_path} must hold a json list of objects (video, caption)")
    if not entries:
        raise ValueError(f"{json_path} holds no entries")
    return entries


def test_items(json_path: Path, video_root: Path | None = None) -> list:
    """The work items of an MSR-VTT-style json: one per entry, in file order.

    Entries need a caption (``caption`` or ``sentence``) and a video (``video``: a path
    relative to ``video_root``, default the json's folder; or ``video_id`` with
    ``{video_root}/{video_id}.mp4``). As in `vtp shard`, a path must stay inside the root
    (no ``..``, no absolute path, no link out); a missing or unsafe file becomes an item that
    fails with its reason.

    Raises:
        ValueError: the json is not such a list, or two entries share a key.
    """
    from tools.shard.inputs import WorkItem, check_key, confined_file

    root = Path(video_root) if video_root else Path(json_path).parent
    items, seen = [], set()
    for index, entry in enumerate(_entries(json_path)):
        caption = entry.get("caption", entry.get("sentence"))
        video = entry.get("video") or (f"{entry['video_id']}.mp4" if "video_id" in entry else None)
        if caption is None or not isinstance(video, str):
            raise ValueError(f"{json_path} entry {index} needs a caption and a video path: "
                             f"{str(entry)[:200]}")
        key = str(entry.get("video_id") or Path(video).stem)
        if key in seen:
            raise ValueError(f"{json_path}: key {key!r} appears twice (one caption per video)")
        seen.add(key)
        path, error = confined_file(root, video)
        if error in ("missing file", "not a regular file"):
            error = f"{error}: {video}"
        error = check_key(key) or error
        items.append(WorkItem(key=key, caption=str(caption), source=video,
                              path=str(path or ""), error=error))
    return items


def check_usable(items: list, json_path: Path, video_root: Path | None = None) -> None:
    """Raises ValueError, with the reasons counted, when no entry of the json can be used."""
    if any(item.error is None for item in items):
        return
    root = Path(video_root) if video_root else Path(json_path).parent
    reasons = Counter(item.error.split(":")[0] for item in items)
    counted = ", ".join(f"{why}: {n}" for why, n in reasons.most_common())
    example = items[0]
    raise ValueError(f"none of the {len(items)} videos of {json_path} can be used ({counted}; "
                     f"e.g. {example.source!r}: {example.error}). Video paths are read relative "
                     f"to {root}; pass --video-root if they start elsewhere")
