"""The watcher that aborts a blocking call on cancellation or timeout."""

from __future__ import annotations

import threading

from runners.nodes.watch import watch


def test_cancellation_runs_the_abort_action_and_says_why() -> None:
    cancelled, aborted = threading.Event(), threading.Event()
    with watch(cancelled, aborted.set, seconds=60) as watching:
        cancelled.set()
        assert aborted.wait(5)
    assert watching.reason == "cancelled"


def test_running_out_of_time_runs_the_abort_action() -> None:
    aborted = threading.Event()
    with watch(threading.Event(), aborted.set, seconds=0.01) as watching:
        assert aborted.wait(5)
    assert watching.reason == "timeout"


def test_nothing_is_aborted_after_the_block_ends() -> None:
    cancelled, calls = threading.Event(), []
    with watch(cancelled, lambda: calls.append(1), seconds=60) as watching:
        pass
    cancelled.set()
    assert watching.thread is not None
    watching.thread.join(5)
    assert not watching.thread.is_alive()
    assert watching.finished and watching.reason is None
    assert calls == []
