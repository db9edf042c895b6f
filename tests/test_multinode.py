"""Two training "nodes" on loopback, launched by Composer's launcher, streaming one bucket.

Each node is ``composer --world_size 2 --nproc 1 --node_rank I --master_addr 127.0.0.1`` (gloo
on CPU) with its own Streaming cache, as two machines would have. Two machines also have two
``/dev/shm``: Streaming keys its shared memory by a prefix that each node's local leader
picks, and two leaders on one host pick the same one. Composer, for its part, broadcasts rank
0's absolute checkpoint path and expects it to be node-local on every node. So each node runs
in its own mount namespace (``unshare``) with a private ``/dev/shm`` and a private working
folder mounted at the same path, which holds its checkpoint folder.

Only rank 0 writes checkpoints; before the relaunch the test copies node 0's checkpoint folder
to node 1, as a cluster's checkpoint store would hand it over. On a cluster that store is the
bucket (``trainer.save_folder=s3://...``, deploy/slurm/train-2node.sbatch); it is not used here
because Composer uploads from a spawned process and publishes the "latest" pointer after a
30 s poll, minutes on two busy CI cores. A folder shared by both nodes does not work with
Composer 0.32's autoresume (both nodes' local rank 0 write and remove one signal file in it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from test_remote_train import remote_overrides, upload_folder
from test_train import COMPOSER, TIMEOUT, TINY, _batches, _env
from train_fixtures import train_shards  # noqa: F401  (session fixture)

BATCHES = 8  # two epochs of the 16 clips at global batch 4 (2 per rank), saves every 3


def _private_shm() -> list[str]:
    """A command prefix that gives the command its own empty /dev/shm, or skips the test."""
    unshare = shutil.which("unshare")
    base = [unshare, "--mount", "--propagation", "private"] if unshare else []
    if unshare and os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    # NODE_DISK (this node's folder) appears at NODE_HOME, the same path on every node
    script = ('mount -t tmpfs tmpfs /dev/shm && mkdir -p "$NODE_HOME" && '
              'mount --bind "$NODE_DISK" "$NODE_HOME" && cd "$NODE_HOME" && exec "$@"')
    wrap = [*base, "sh", "-c", script, "sh"]
    probe = {**os.environ, "NODE_DISK": "/tmp", "NODE_HOME": "/tmp"}
    if not unshare or subprocess.run([*wrap, "true"], env=probe, capture_output=True).returncode:
        pytest.skip("needs `unshare` with mount namespaces to give each node its own /dev/shm")
    return wrap


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(rank: int, port: int, overrides: list[str], work: Path, wrap: list[str], log):
    command = [*wrap, str(COMPOSER), "--world_size", "2", "--nproc", "1", "--node_rank",
               str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
               "--stdout", f"{work}/node{rank}.out", "--stderr", f"{work}/node{rank}.err",
               "-m", "commands.cli", "train", str(TINY), *overrides]
    disk = work / f"disk-node{rank}"  # the node's own disk: its local checkpoint copies
    disk.mkdir(exist_ok=True)
    env = {**_env(), "NODE_DISK": str(disk), "NODE_HOME": str(work / "node")}
    return subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=log,
                            start_new_session=True)


def _launch(work: Path, remote: str, wrap: list[str], kill_when=None) -> None:
    """Both nodes; with ``kill_when``, both are SIGKILLed as soon as it returns True."""
    port, log = _free_port(), (work / "launch.log").open("a")
    # a relative save folder: each node's own, under its private working folder
    overrides = [remote_overrides(remote, work / f"cache-node{r}", work, BATCHES)
                 + ["trainer.save_folder=ckpt"] for r in (0, 1)]
    nodes = [_node(r, port, overrides[r], work, wrap, log) for r in (0, 1)]
    deadline = time.monotonic() + 2 * TIMEOUT
    try:
        while any(n.poll() is None for n in nodes):
            assert time.monotonic() < deadline, "the two-node run did not finish in time"
            if kill_when is not None and kill_when():
                break
            time.sleep(0.05)
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)  # the launcher and its rank: a lost node
            node.wait(timeout=30)
        log.close()
    outputs = "\n".join((work / f"node{r}.err").read_text()[-1500:] for r in (0, 1)
                        if (work / f"node{r}.err").exists())
    if kill_when is not None:
        assert all(len(_batches(work, r)) < BATCHES for r in (0, 1)), "ended before the kill"
    else:
        assert [n.returncode for n in nodes] == [0, 0], f"a node failed:\n{outputs}"


@pytest.mark.slow
def test_two_nodes_split_the_bucket_and_resume_after_both_are_killed(s3, tmp_path, train_shards):  # noqa: F811
    wrap = _private_shm()
    bucket = s3.new_bucket()
    remote = f"s3://{bucket}/tiny/mds"
    upload_folder(train_shards / "mds", remote)
    work = tmp_path / "run"
    work.mkdir()
    started = time.monotonic()

    def past_a_save() -> bool:
        return min(len(_batches(work, r)) for r in (0, 1)) >= 4

    _launch(work, remote, wrap, kill_when=past_a_save)
    before = [_batches(work, r) for r in (0, 1)]
    for r in (0, 1):
        (work / f"batches-rank{r}.jsonl").rename(work / f"before-kill-rank{r}.jsonl")
    saved = work / "disk-node0" / "ckpt"
    assert (saved / "latest-rank0.pt").is_file(), "node 0 saved no checkpoint before the kill"
    assert not list((work / "disk-node1").rglob("*.pt")), "rank 1 wrote a checkpoint"
    shutil.copytree(saved, work / "disk-node1" / "ckpt", symlinks=True,  # the store hands it over
                    dirs_exist_ok=True)
    _launch(work, remote, wrap)  # the same two commands again: autoresume on both nodes
    after = [_batches(work, r) for r in (0, 1)]
    print(f"two-node kill + relaunch: {time.monotonic() - started:.0f} s")

    resumed_from = {a[0]["batch"] - 1 for a in after}
    assert len(resumed_from) == 1, f"the nodes resumed from different steps: {resumed_from}"
    start = resumed_from.pop()
    assert start in (3, 6), f"expected to resume from a saved step, got {start}"
    joined = []
    for r in (0, 1):
        replayed = [b for b in before[r] if b["batch"] > start]
        for old, new in zip(replayed, after[r], strict=False):
            assert new["keys"] == old["keys"], f"rank {r} batch {new['batch']}: the stream moved"
        joined.append([b for b in before[r] if b["batch"] <= start] + after[r])
        assert [b["batch"] for b in joined[r]] == list(range(1, BATCHES + 1))
        assert all(len(b["keys"]) == 2 for b in joined[r]), "global batch 4 = 2 per rank"
    for epoch in (slice(e, e + 4) for e in range(0, BATCHES, 4)):
        keys = [[k for b in joined[r][epoch] for k in b["keys"]] for r in (0, 1)]
        assert not set(keys[0]) & set(keys[1]), f"the two nodes trained on the same samples: {keys}"
        assert len(keys[0] + keys[1]) == len(set(keys[0]) | set(keys[1])) == 16, (
            "one epoch over both nodes is the dataset, each sample once")
    for r in (0, 1):
        assert list((work / f"cache-node{r}").rglob("*.mds")), f"node {r} streamed nothing"
