"""A subscriber's inbox: bounded, and a stalled subscriber is sent to the store instead."""

from __future__ import annotations

from web.tail import WATCH_BACKLOG, Watch


async def test_a_subscriber_that_falls_behind_is_told_to_read_the_store() -> None:
    watch = Watch()
    for version in range(1, WATCH_BACKLOG + 10):
        watch.deliver([{"version": version}])
    assert watch.pending <= WATCH_BACKLOG  # bounded, whatever the subscriber does
    assert await watch.next(1.0) is None  # behind: read the store
    assert watch.pending == 0
    watch.deliver([{"version": 99}])
    assert await watch.next(1.0) == [{"version": 99}]
    assert await watch.next(0.01) == []  # nothing new in time
