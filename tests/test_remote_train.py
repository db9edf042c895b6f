"""`vtp train` streaming its MDS shards from a bucket (loopback S3): data.remote + data.path.

The shards are the tiny training shards uploaded to moto's server; Streaming downloads them
into the local cache as it goes. A run killed with SIGKILL (which leaves Streaming's shared
memory behind) is relaunched with the same command and must continue the data stream exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train import _batches, _overrides, _train, _train_until_killed
from train_fixtures import train_shards  # noqa: F401  (session fixture)

from pipeline.storage import Uploader


def upload_folder(local: Path, remote: str) -> list[str]:
    """Uploads every file under ``local`` to the same relative keys under ``remote``."""
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    uploader = Uploader(local, remote)
    for name in files:
        uploader.upload(name)
    return files


def remote_overrides(remote: str, cache: Path, work: Path, batches: int) -> list[str]:
    local = [o for o in _overrides(cache, work, batches) if not o.startswith("data.path=")]
    return [*local, f"data.path={cache}", f"data.remote={remote}"]


def test_train_streams_from_the_bucket_and_resumes_after_kill(s3, tmp_path, train_shards):  # noqa: F811
    bucket = s3.new_bucket()
    remote = f"s3://{bucket}/tiny/mds"
    shipped = upload_folder(train_shards / "mds", remote)
    work, cache = tmp_path / "run", tmp_path / "cache"
    overrides = remote_overrides(remote, cache, work, 8)

    _train_until_killed(work, overrides, kill_after=4)
    before = _batches(work)
    (work / "batches-rank0.jsonl").rename(work / "before-kill.jsonl")
    _train(work, overrides)  # same command: stale shared memory is cleaned, autoresume loads
    after = _batches(work)

    resumed_from = after[0]["batch"] - 1
    assert resumed_from in (3, 6), f"expected to resume from a saved step, got batch {resumed_from}"
    assert [b["batch"] for b in after] == list(range(resumed_from + 1, 9))
    # the relaunch repeats what the killed run did after its checkpoint, sample for sample
    replayed = [b for b in before if b["batch"] > resumed_from]
    for old, new in zip(replayed, after, strict=False):
        assert new["keys"] == old["keys"], f"batch {new['batch']}: the data stream moved"
        assert new["loss"]["total"] == pytest.approx(old["loss"]["total"], rel=1e-5)
    # and the joined run visits each of the 16 clips once per epoch (4 batches of 4)
    joined = [b for b in before if b["batch"] <= resumed_from] + after
    assert [b["batch"] for b in joined] == list(range(1, 9))
    for epoch in (joined[:4], joined[4:]):
        keys = [k for b in epoch for k in b["keys"]]
        assert len(keys) == len(set(keys)) == 16, f"an epoch repeated or lost samples: {keys}"
    # the samples came through the cache from the bucket
    cached = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    assert "index.json" in cached and any(n.endswith(".mds") for n in cached), cached
    assert cached <= set(shipped), f"cache holds files the bucket does not: {cached - set(shipped)}"


def test_damaged_shard_in_a_bucket_is_caught_by_its_hash_on_first_read(s3, tmp_path):
    """The index is read from the bucket before Streaming starts, so a fresh cache still
    checks what it downloads against the sha1 `vtp shard` wrote (issue 13, item 12)."""
    import json

    from pipeline.sources import MdsSource
    from tools.shard.writers import write_mds, write_mds_index

    folder = tmp_path / "mds"
    samples = [{"key": f"k{i}", "video": bytes([i]) * 200, "caption": "c", "meta": {"i": i}}
               for i in range(3)]
    write_mds(folder / "g0", samples)
    write_mds_index(folder, ["g0"])
    shard = json.loads((folder / "index.json").read_text())["shards"][0]["raw_data"]
    data = bytearray((folder / shard["basename"]).read_bytes())
    data[-10] ^= 0xFF  # damage: one byte of the last sample's record
    (folder / shard["basename"]).write_bytes(bytes(data))
    remote = f"s3://{s3.new_bucket()}/mds"
    upload_folder(folder, remote)
    copied = MdsSource(str(tmp_path / "cache"), remote, 1, False, 0)[1]
    assert "error" in copied and "Checksum failure" in copied["error"]
