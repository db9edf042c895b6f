"""Where encoded samples come from: MDS through Streaming, or WebDataset tars through DALI.

Both sources yield dicts ``{key, video (bytes), caption, meta (dict), epoch}``; the epoch lets
the batch builder draw a fresh but reproducible view of a sample every epoch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from streaming import StreamingDataset


def shard_folder(path: str | Path, fmt: str) -> Path:
    """The folder holding ``fmt`` shards: ``PATH/mds`` (or ``PATH/wds``) if present, else PATH.

    Args:
        path: a `vtp shard` output folder or the format folder itself.
        fmt: ``mds`` or ``wds``.
    """
    path = Path(path)
    return path / fmt if (path / fmt).is_dir() else path


class MdsSource(StreamingDataset):
    """A StreamingDataset over MDS shards that also reports the epoch of each sample.

    ``batch_size`` must be the per-rank batch size: Streaming then partitions samples so that a
    resumed run (Composer checkpoints ``state_dict``) continues exactly where it stopped.

    Args:
        local: local MDS folder (or cache folder when ``remote`` is set).
        remote: optional remote location.
        batch_size: per-rank batch size.
        shuffle: shuffle the order.
        seed: shuffle seed.
    """

    def __init__(self, local: str, remote: str | None, batch_size: int, shuffle: bool, seed: int):
        # Shards copied from a remote are checked against the hashes `vtp shard` wrote into
        # the index, so damage in transit is caught on arrival, naming the shard.
        validate = "sha1" if remote and _index_has_hash(local, remote, "sha1") else None
        super().__init__(local=local, remote=remote, batch_size=batch_size, shuffle=shuffle,
                         shuffle_seed=seed, validate_hash=validate)
        self._epoch = 0

    def get_item(self, sample_id: int, retry: int = 7) -> dict:
        """The sample, or ``{"key", "error"}`` when its record cannot be decoded (a damaged
        shard): the batch builder then skips it instead of the run ending here."""
        try:
            return super().get_item(sample_id, retry)
        except (FileNotFoundError, RuntimeError):  # a missing shard, a dead download thread
            raise
        except Exception as err:  # Streaming's column decoders raise anything on bad bytes
            return {"key": f"sample #{sample_id}", "error": f"unreadable MDS record: {err!r}"}

    def _resume_incr_epoch(self) -> tuple[int, int]:
        epoch, sample_in_epoch = super()._resume_incr_epoch()
        self._epoch = epoch
        return epoch, sample_in_epoch

    def __iter__(self):
        for sample in super().__iter__():
            yield {**sample, "epoch": self._epoch}


def _index_has_hash(local: str, remote: str, algo: str) -> bool:
    """Whether the MDS index (local copy, else the remote's) lists ``algo`` hashes for every
    shard; an index that cannot be read says no (Streaming then reports it itself)."""
    index = _read_index(local, remote)
    shards = (index or {}).get("shards") or []
    return bool(shards) and all(algo in (s.get("raw_data") or {}).get("hashes", {})
                                for s in shards)


def _read_index(local: str, remote: str) -> dict | None:
    if (Path(local) / "index.json").is_file():
        return json.loads((Path(local) / "index.json").read_text())
    if "://" not in str(remote):
        path = Path(remote) / "index.json"
        return json.loads(path.read_text()) if path.is_file() else None
    if not str(remote).startswith("s3://"):
        return None
    from pipeline.storage import download, join

    # Read into a scratch file, not the cache: Streaming places its own copy there.
    with tempfile.TemporaryDirectory(prefix="vtp-index-") as scratch:
        try:
            download(join(str(remote), "index.json"), Path(scratch) / "index.json", attempts=2)
            return json.loads((Path(scratch) / "index.json").read_text())
        except (OSError, ValueError):
            return None


def first_meta_mds(source: MdsSource) -> dict:
    """The metadata of the first sample (reads one shard); used to check the codec early."""
    return source[0]["meta"]


def wds_tars(folder: Path) -> tuple[list[str], list[str]]:
    """The tars of a WebDataset folder and their DALI .idx files (which must exist)."""
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar shards in {folder}")
    missing = [t for t in tars if not Path(t).with_suffix(".idx").exists()]
    if missing:
        raise FileNotFoundError(f"missing DALI index for {missing[:3]}: create it with "
                                f"`wds2idx TAR TAR.idx` or re-run `vtp shard`")
    return tars, [str(Path(t).with_suffix(".idx")) for t in tars]


def first_meta_wds(folder: Path) -> dict:
    """The metadata (.json member) of the first sample of the first tar."""
    import tarfile

    with tarfile.open(wds_tars(folder)[0][0]) as tar:
        for member in tar:
            if member.name.endswith(".json"):
                return json.loads(tar.extractfile(member).read())
    raise ValueError(f"no .json member in {wds_tars(folder)[0][0]}")


def _reader_pipeline(tars: list[str], indexes: list[str], shard_id: int, num_shards: int,
                     shuffle: bool, seed: int):
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=seed, exec_dynamic=True)
    def definition():
        video, text, meta = fn.readers.webdataset(
            paths=tars, index_paths=indexes, ext=["webm;avi;mp4;ivf", "txt", "json"],
            missing_component_behavior="error", shard_id=shard_id, num_shards=num_shards,
            random_shuffle=shuffle, initial_fill=64, stick_to_shard=True, name="reader")
        return video, text, meta, fn.get_property(video, key="source_info")

    pipe = definition()
    pipe.build()
    return pipe


def _shard_size(pipe, shard_id: int, num_shards: int) -> int:
    total = pipe.reader_meta("reader")["epoch_size"]
    return total * (shard_id + 1) // num_shards - total * shard_id // num_shards


def _text(array) -> str:
    return np.array(array).tobytes().decode()


class WdsSource(torch.utils.data.IterableDataset):
    """WebDataset tars read by DALI's ``readers.webdataset`` (with the .idx files).

    Each (rank, worker) reads its own shard of the samples; the reader's order is fixed by
    ``seed`` and the epoch, which the loader advances in the main process (``begin_epoch``),
    so workers must not be persistent. Resumption skips what each worker had yielded and
    rotates the workers so the DataLoader's round-robin continues with the batch that was next.

    Args:
        folder: the folder of tars and .idx files.
        batch_size: samples per batch (a DataLoader worker yields whole batches).
        shuffle: shuffle within the reader's buffer.
        seed: reader seed.
        rank: this process's rank.
        world: number of ranks.
    """

    def __init__(self, folder: Path, batch_size: int, shuffle: bool, seed: int, rank: int = 0,
                 world: int = 1):
        self.tars, self.indexes = wds_tars(folder)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch, self.next_epoch = 0, 0
        self.skip_batches, self.resume_batches = 0, 0

    def begin_epoch(self) -> None:
        """Called by the loader in the main process before each epoch's workers start."""
        self.epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        self.skip_batches, self.resume_batches = self.resume_batches, 0

    def state_dict(self, num_samples: int, from_beginning: bool = True) -> dict:
        """The position to resume from (``num_samples`` consumed in the current epoch)."""
        return {"epoch": self.epoch, "sample_in_epoch": num_samples}

    def load_state_dict(self, state: dict) -> None:
        self.next_epoch = int(state["epoch"])
        self.resume_batches = int(state["sample_in_epoch"]) // self.batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        done, epoch = self.skip_batches, self.epoch
        logical = (worker + done) % workers  # batch `done` (the next one) comes from worker 0
        skip = len(range(logical, done, workers)) * self.batch_size
        shard_id, num_shards = self.rank * workers + logical, self.world * workers
        pipe = _reader_pipeline(self.tars, self.indexes, shard_id, num_shards, self.shuffle,
                                self.seed + epoch)
        for index in range(_shard_size(pipe, shard_id, num_shards)):
            video, text, meta, source = (out.at(0) for out in pipe.run())
            if index < skip:
                continue
            name = Path(_text(source).split(":")[-1]).name
            yield {"key": name.rsplit(".", 1)[0], "video": np.array(video).tobytes(),
                   "caption": _text(text), "meta": json.loads(_text(meta)), "epoch": epoch}
