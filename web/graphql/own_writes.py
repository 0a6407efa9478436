"""Reading one's own writes: a read model lags the event store by the projector's lag, so a
client that asks for a workflow it created or an execution it started a moment ago is made to
wait for it (bounded), not told that it does not exist."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from query_side import views
from web.graphql.errors import not_found, not_projected
from web.services import Services, scoped

T = TypeVar("T")

STARTED = "ExecutionStarted"


def read_deadline(svc: Services) -> float:
    """When a read that waits for the read model gives up: `read_wait_timeout_s` (≤ 2 s) on."""
    return time.monotonic() + min(svc.settings.read_wait_timeout_s, 2.0)


async def when_projected(
    svc: Services,
    workspace_id: str,
    aggregate_id: UUID,
    read: Callable[[], Awaitable[T | None]],
    context: str = "workflow",
    *,
    deadline: float | None = None,
    absent: bool = False,
) -> T | None:
    """`read()` of the aggregate's read model, again after each of the projector's change
    notices until it answers, until `deadline` (`read_deadline`); None when it never did.
    `absent`: the read model has no row of the aggregate yet (no version to look up)."""
    deadline = read_deadline(svc) if deadline is None else deadline
    async with svc.hub.feed(workspace_id, aggregate_id, context, absent=absent) as feed:
        while True:
            seen = feed.version_seen  # taken before reading: a notice in between still wakes
            found = await read()
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            with contextlib.suppress(TimeoutError):  # then one last read
                await asyncio.wait_for(seen.wait(), remaining)


async def wait_for_version(
    svc: Services, workspace_id: str, workflow_id: UUID, version: int, deadline: float
) -> None:
    """Wait until the read model shows `version` of the workflow, or the deadline."""

    async def shown() -> bool | None:
        async with scoped(svc.pool, workspace_id) as conn:
            current = await views.workflow_version(conn, workspace_id, workflow_id)
        return True if current is not None and current >= version else None

    await when_projected(svc, workspace_id, workflow_id, shown, deadline=deadline)


async def _recorded(svc: Services, workspace_id: str, aggregate_id: UUID, context: str) -> bool:
    """Whether the event store holds the aggregate, in the workspace (as what it is asked as:
    a credential's id is no execution)."""
    if context == "workflow":
        return await svc.tail.workspace_of(aggregate_id) == workspace_id
    return await svc.execution_tail.origin(aggregate_id) == (STARTED, workspace_id)


async def recorded_read(
    svc: Services,
    workspace_id: str,
    aggregate_id: UUID,
    read: Callable[[], Awaitable[T | None]],
    context: str = "workflow",
    *,
    deadline: float | None = None,
) -> T:
    """`read()` of the aggregate's read model. An id the store does not hold for the
    workspace is NOT_FOUND (as is every id the caller cannot see); one the read model has not
    reached yet is waited for until `deadline` (`read_deadline`), then UNAVAILABLE (ask
    again)."""
    found = await read()
    if found is not None:
        return found
    what = f"{context} {aggregate_id}"
    if not await _recorded(svc, workspace_id, aggregate_id, context):
        raise not_found(what)
    found = await when_projected(
        svc, workspace_id, aggregate_id, read, context, deadline=deadline, absent=True
    )
    if found is None:
        raise not_projected(what)
    return found


__all__ = ["STARTED", "read_deadline", "recorded_read", "wait_for_version", "when_projected"]
