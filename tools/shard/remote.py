"""`vtp shard` and `vtp merge` on object storage: ``s3://`` inputs and outputs.

The local tools stay local: a remote output is a local *stage* folder that the run writes as
usual, each finished group uploaded as soon as it is written (its files first, its completion
marker last, so a marker in the bucket always means a whole group), and its video bytes then
freed locally. What stays in the stage is the run's skeleton: ``settings.json``, the markers
and each group's MDS ``index.json``, which is all the final index, manifest and summary are
built from. A rerun, on this machine or another, first pulls that skeleton from the bucket
and deletes the objects of groups that an earlier run left without a marker; the runner then
redoes exactly the unfinished groups, so no sample is lost or written twice.

Remote videos are downloaded, one at a time, into the pool task's scratch folder, so ffmpeg
still reads only local files; a missing object or a failed download is that sample's failure.
A remote merge copies the group objects inside the store (no bytes through this machine) and
builds the merged skeleton with the local merge, checks included.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from pipeline.storage import (
    StorageError,
    Uploader,
    check_access,
    client,
    delete,
    download,
    join,
    list_keys,
)
from tools.shard.inputs import WorkItem, check_row
from tools.shard.writers import MARKERS

# the small files of a run that the final summary and a merge are built from
SKELETON = ("settings.json", "summary.json", "manifest.parquet")


def default_stage(url: str, root: Path | None = None) -> Path:
    """The local stage of a remote output: a folder named after the URL, so reruns find it."""
    base = root or Path(tempfile.gettempdir()) / "vtp-stage"
    return base / hashlib.sha256(url.encode()).hexdigest()[:16]


def locate(root: str, page_dir: str, videoid: str) -> tuple[str | None, str | None]:
    """``root/page_dir/videoid.mp4`` as an object URL, or why the row cannot name one.

    Whether the object exists is found out when it is downloaded (one request, not two).
    """
    reason = check_row(page_dir, videoid)
    return (None, reason) if reason else (join(root, page_dir, f"{videoid}.mp4"), None)


def fetch_input(item: WorkItem, folder: Path) -> Path:
    """Downloads the sample's video into ``folder``; raises OSError with the reason."""
    local = folder / "input.mp4"
    download(item.path, local)
    return local


def fetch_manifest(url: str, stage: Path) -> Path:
    """A local copy of a manifest kept in the bucket (its suffix says its format).

    Raises:
        StorageError: the bucket cannot be used, or the manifest cannot be downloaded.
    """
    check_access(url)
    local = stage / f"input-manifest{Path(url).suffix}"
    stage.mkdir(parents=True, exist_ok=True)
    try:
        download(url, local)
    except OSError as err:
        raise StorageError(f"manifest: {err}") from None
    return local


def group_of(key: str) -> str | None:
    """The group a stored file belongs to (``mds/G/...``, ``wds/G.tar``, ``done/G.json``)."""
    head, _, rest = key.partition("/")
    if head == "mds" and "/" in rest:
        return rest.split("/", 1)[0]
    if head in ("wds", MARKERS) and "/" not in rest and "." in rest:
        return rest.rsplit(".", 1)[0]
    return None


def pull_skeleton(url: str, dest: Path, keys: list[str], s3) -> set[str]:
    """Downloads a run's skeleton from ``url`` into ``dest``; returns its finished groups."""
    done = {group_of(k) for k in keys if k.startswith(f"{MARKERS}/") and k.endswith(".json")}
    wanted = [k for k in keys if k in SKELETON or k.startswith(f"{MARKERS}/")
              or (k.endswith("/index.json") and group_of(k) in done)]
    for key in wanted:
        (dest / key).parent.mkdir(parents=True, exist_ok=True)
        download(join(url, key), dest / key, s3=s3)
    return done


class RemoteOut:
    """A `vtp shard` output in a bucket, written through a local stage (see the module doc).

    Args:
        url: ``s3://bucket/prefix``.
        stage: the local folder the run writes (``default_stage(url)`` when None).
    """

    def __init__(self, url: str, stage: Path | None = None):
        check_access(url)
        self.url, self.stage = url, stage or default_stage(url)
        self.s3 = client(3)
        self._settings_sent = False

    def pull(self) -> None:
        """Makes the stage hold exactly the bucket's finished state (see the module doc)."""
        keys = list_keys(self.url, self.s3)
        if "settings.json" not in keys:  # a new output: an old stage must not mix in
            shutil.rmtree(self.stage, ignore_errors=True)
        for marker in (self.stage / MARKERS).glob("*.json"):
            if f"{MARKERS}/{marker.name}" not in keys:
                marker.unlink()  # written here but never confirmed in the bucket: redo it
        done = pull_skeleton(self.url, self.stage, keys, self.s3)
        leftovers = [k for k in keys if group_of(k) is not None and group_of(k) not in done]
        if leftovers:
            delete(self.url, leftovers, self.s3)
        self.uploader = Uploader(self.stage, self.url)

    def push_group(self, name: str) -> None:
        """Uploads one written group, marker last, then frees its video bytes locally."""
        if not self._settings_sent:
            self.uploader.upload("settings.json")
            self._settings_sent = True
        files = [p for p in sorted((self.stage / "mds" / name).glob("*")) if p.is_file()]
        wds = self.stage / "wds"
        files += [p for p in (wds / f"{name}.tar", wds / f"{name}.idx") if p.is_file()]
        for path in files:
            self.uploader.upload(path.relative_to(self.stage))
        self.uploader.upload(f"{MARKERS}/{name}.json")
        for path in files:
            if path.name != "index.json":
                path.unlink()

    def push_final(self) -> None:
        """Uploads the run's index, manifest and summary (the summary last: it says 'complete')."""
        for name in ("settings.json", "mds/index.json", "manifest.parquet", "summary.json"):
            if (self.stage / name).is_file():
                self.uploader.upload(name)
