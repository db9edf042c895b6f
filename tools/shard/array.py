"""Which part of the input this machine shards: the flags, or the scheduler's array job.

A Slurm job array (``sbatch --array=0-N``) tells each task ``SLURM_ARRAY_TASK_ID`` and
``SLURM_ARRAY_TASK_COUNT``; a Kubernetes Indexed Job tells each pod ``JOB_COMPLETION_INDEX``
only, so the part count comes from ``--num-workers`` (the Job's ``completions``). An explicit
``--worker-index`` always wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tools.shard.inputs import InputError


@dataclass(frozen=True)
class Part:
    """This machine's part: ``index`` of ``count``, and where that was read (said in the log)."""

    count: int
    index: int
    source: str


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise InputError(f"{name}={env[name]!r} is not an integer") from None


def _slurm(env: Mapping[str, str], num_workers: int | None) -> Part:
    if "SLURM_ARRAY_TASK_COUNT" not in env:
        raise InputError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not "
                         "(Slurm older than 17.11?): give --num-workers and --worker-index")
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    first = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    index = task - first  # --array=1-10 numbers tasks from 1
    if num_workers is not None and num_workers != count:
        raise InputError(f"--num-workers {num_workers} disagrees with the Slurm array's "
                         f"SLURM_ARRAY_TASK_COUNT={count}")
    if not 0 <= index < count:
        raise InputError(f"SLURM_ARRAY_TASK_ID={task} is not in {first}..{first + count - 1}: "
                         "submit a contiguous array (--array=0-N, no step)")
    return Part(count, index, f"SLURM_ARRAY_TASK_ID={task} of SLURM_ARRAY_TASK_COUNT={count}")


def _indexed_job(env: Mapping[str, str], num_workers: int | None) -> Part:
    index = _int(env, "JOB_COMPLETION_INDEX")
    if num_workers is None:
        raise InputError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give "
                         "--num-workers equal to the Job's completions")
    if not 0 <= index < num_workers:
        raise InputError(f"JOB_COMPLETION_INDEX={index} is not below --num-workers {num_workers}")
    return Part(num_workers, index,
                f"JOB_COMPLETION_INDEX={index} with --num-workers {num_workers}")


def resolve_part(num_workers: int | None, worker_index: int | None,
                 env: Mapping[str, str]) -> Part:
    """This machine's part of the input.

    Args:
        num_workers: ``--num-workers``, or None when not given.
        worker_index: ``--worker-index``, or None when not given.
        env: the environment (``os.environ``).

    Raises:
        InputError: the flags and the environment leave the part unclear or contradict.
    """
    if worker_index is not None:
        return Part(num_workers or 1, worker_index, "--worker-index")
    if "SLURM_ARRAY_TASK_ID" in env:
        return _slurm(env, num_workers)
    if "JOB_COMPLETION_INDEX" in env:
        return _indexed_job(env, num_workers)
    if num_workers not in (None, 1):
        raise InputError(f"--num-workers {num_workers} without --worker-index: give the index, "
                         "or run as a Slurm array task or Kubernetes Indexed Job pod")
    return Part(1, 0, "one machine (no --worker-index, no array job in the environment)")
