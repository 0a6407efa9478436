"""A subscriber's inbox: bounded, and a stalled subscriber is sent to the store instead."""

from __future__ import annotations

import asyncio

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


async def test_one_timer_serves_many_waits_and_each_wait_still_ends_on_time() -> None:
    watch = Watch()
    loop = asyncio.get_running_loop()
    for version in range(1, 6):  # woken by deliveries long before the 5 s are up
        loop.call_soon(watch.deliver, [{"version": version}])
        assert await watch.next(5.0) == [{"version": version}]
    armed = watch._timer
    assert armed is not None
    loop.call_soon(watch.deliver, [{"version": 6}])
    assert await watch.next(5.0) == [{"version": 6}]
    assert watch._timer is armed  # not one timer per wait
    started = loop.time()
    assert await watch.next(0.05) == []  # a shorter wait than the armed one: re-armed
    assert 0.04 <= loop.time() - started < 1.0
    loop.call_soon(watch.deliver, [{"version": 7}])
    assert await watch.next(0.05) == [{"version": 7}]  # leaves a timer due in 0.05 s
    started = loop.time()
    assert await watch.next(0.3) == []  # that one rings first; this wait lasts its own 0.3 s
    assert 0.25 <= loop.time() - started < 1.5
    watch.close()
    assert watch._timer is None


async def test_a_waiting_subscriber_takes_pushed_rows_without_being_woken() -> None:
    watch = Watch()
    pushed: list[int] = []
    refuse_from = 3

    def push(rows: list[dict[str, int]]) -> int:
        for taken, row in enumerate(rows):
            if row["version"] >= refuse_from:
                return taken
            pushed.append(row["version"])
        return len(rows)

    watch.push = push  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    loop.call_soon(watch.deliver, [{"version": 1}])
    loop.call_soon(watch.deliver, [{"version": 2}, {"version": 3}, {"version": 4}])
    loop.call_soon(watch.deliver, [{"version": 5}])  # behind the queued ones: not pushed
    woken = await watch.next(5.0)
    assert pushed == [1, 2]
    assert woken == [{"version": 3}, {"version": 4}, {"version": 5}]  # in order, after them
    watch.deliver([{"version": 6}])  # not waiting: queued, not pushed
    assert await watch.next(5.0) == [{"version": 6}] and pushed == [1, 2]
    assert await watch.next(0.05) == []  # pushes alone never wake it: its timer does


async def test_a_push_that_fails_leaves_the_rows_to_the_subscriber() -> None:
    watch = Watch()

    def broken(rows: list[dict[str, int]]) -> int:
        raise RuntimeError("a bug")

    watch.push = broken  # type: ignore[assignment]
    asyncio.get_running_loop().call_soon(watch.deliver, [{"version": 1}])
    assert await watch.next(5.0) == [{"version": 1}]
    assert watch.push is None  # not tried again for every later event
