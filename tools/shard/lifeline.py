"""Pool workers die with the process that started them.

A `kill -9` of `vtp shard` gives its pool no chance to shut down: without this, workers (and
the multiprocessing resource tracker, which lives as long as any of them holds its pipe)
would run on forever. Linux delivers a chosen signal to a process when the thread that forked
it ends (``PR_SET_PDEATHSIG``); the handler kills the worker's own children (ffmpeg) first.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def _children() -> list[int]:
    """Pids whose parent is this process (ffmpeg runs started by this worker)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # the name in (...) may hold spaces
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def _exit_with_children(signum: int = signal.SIGTERM, frame=None) -> None:
    for pid in _children():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(128 + signum)


def die_with_parent(parent: int) -> None:
    """Pool initializer: SIGTERM when ``parent`` dies, and the handler ends this worker and
    its ffmpeg children. No-op where ``prctl`` does not exist (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return
    signal.signal(signal.SIGTERM, _exit_with_children)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was armed
        _exit_with_children()
