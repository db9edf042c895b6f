"""The demo's pretraining process: results and errors come back, and it never outlives the
wait for it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from commands.demo import _in_child


def test_result_and_error_come_back():
    assert _in_child(int, "7") == 7
    with pytest.raises(ValueError, match="invalid literal"):
        _in_child(int, "seven")


def test_a_child_that_dies_is_an_error_naming_its_exit_code():
    with pytest.raises(RuntimeError, match="_exit process ended without a result.*exit code 3"):
        _in_child(os._exit, 3)


def test_the_child_is_stopped_when_the_wait_is_interrupted():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(3)
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            _in_child(time.sleep, 120)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 60
    assert multiprocessing.active_children() == []

