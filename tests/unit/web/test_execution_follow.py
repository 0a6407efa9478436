"""Following one execution's events: gapless and in order whatever the live feed does (late,
out of order, repeated, or a subscriber fallen behind), and over once the execution is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

from web.graphql.execution_subscription import follow
from web.tail import WATCH_BACKLOG, Watch


def row(version: int, kind: str = "StepSucceeded") -> dict[str, Any]:
    return {"version": version, "type": kind, "payload": {}}


class StoreTail:
    """An in-memory tail: `stored` is the event store; `live` the watch handed out."""

    def __init__(self, stored: list[dict[str, Any]]) -> None:
        self.stored = stored
        self.live = Watch()
        self.reads = 0

    @contextlib.asynccontextmanager
    async def watch(self, aggregate_id: UUID) -> AsyncIterator[Watch]:
        yield self.live

    async def events_after(self, aggregate_id: UUID, version: int) -> list[dict[str, Any]]:
        self.reads += 1
        return [r for r in self.stored if r["version"] > version]


async def allowed() -> None:
    pass


async def versions(tail: StoreTail, after: int = 0, limit: int = 100) -> list[int]:
    seen = []
    stream = follow(tail, uuid4(), after, allowed, wait_s=0.01)  # type: ignore[arg-type]
    async for r in stream:
        seen.append(r["version"])
        if len(seen) >= limit:
            await stream.aclose()
    return seen


async def test_it_reads_the_store_then_ends_with_the_finish() -> None:
    tail = StoreTail([row(1, "ExecutionStarted"), row(2), row(3, "ExecutionFinished"), row(4)])
    assert await asyncio.wait_for(versions(tail), 5) == [1, 2, 3]


async def test_live_rows_after_a_gap_are_completed_from_the_store() -> None:
    tail = StoreTail([row(1, "ExecutionStarted")])
    task = asyncio.create_task(versions(tail))
    await asyncio.sleep(0.05)
    tail.stored += [row(2), row(3), row(4, "ExecutionFinished")]
    tail.live.deliver([row(1, "ExecutionStarted"), row(3)])  # a repeat, then 2 is missing
    assert await asyncio.wait_for(task, 5) == [1, 2, 3, 4]


async def test_a_subscriber_fallen_behind_its_inbox_reads_the_store() -> None:
    tail = StoreTail([row(1, "ExecutionStarted")])
    task = asyncio.create_task(versions(tail))
    await asyncio.sleep(0.05)
    last = WATCH_BACKLOG + 5
    tail.stored += [row(v) for v in range(2, last)] + [row(last, "ExecutionFinished")]
    for r in tail.stored[1:]:
        tail.live.deliver([r])  # more than the inbox holds: it is told to read the store
    assert await asyncio.wait_for(task, 5) == list(range(1, last + 1))


async def test_after_version_skips_what_the_subscriber_has() -> None:
    tail = StoreTail([row(1, "ExecutionStarted"), row(2), row(3, "ExecutionFinished")])
    assert await asyncio.wait_for(versions(tail, after=2), 5) == [3]


async def test_the_access_check_runs_while_waiting_and_can_end_the_stream() -> None:
    tail = StoreTail([row(1, "ExecutionStarted")])

    class Revoked(Exception):
        pass

    async def revoked() -> None:
        raise Revoked

    seen = []
    try:
        async for r in follow(tail, uuid4(), 0, revoked, wait_s=0.01):  # type: ignore[arg-type]
            seen.append(r["version"])
    except Revoked:
        pass
    assert seen == [1]
