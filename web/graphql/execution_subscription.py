"""Subscriptions: one execution's events as they happen, from the execution event store."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any
from uuid import UUID

import strawberry
from strawberry.types import Info

from web.auth import SECURED, Principal
from web.auth.permissions import unauthenticated
from web.graphql.context import caller, services
from web.graphql.errors import not_found, parse_id
from web.graphql.execution_types import ExecutionUpdate
from web.graphql.own_writes import STARTED
from web.graphql.subscription import ACCESS_CHECK_S
from web.services import Services
from web.tail import READ_LIMIT, EventTail, Row

FINISHED = "ExecutionFinished"


async def follow(
    tail: EventTail,
    execution_id: UUID,
    after_version: int,
    between: Callable[[], Awaitable[None]],
    wait_s: float = ACCESS_CHECK_S,
) -> AsyncGenerator[Row, None]:
    """The execution's events after `after_version`, gapless and in version order, from the
    store and then live; ends after ExecutionFinished. `between` runs whenever it waited
    (at least every `wait_s`), to end a subscription its caller may no longer hold."""
    # Watch before reading what was missed: nothing falls in between (repeats are skipped
    # by version).
    async with tail.watch(execution_id) as watch:
        last = max(after_version, 0)
        rows = await tail.events_after(execution_id, last)
        while True:
            gap = False
            for row in rows:
                if row["version"] <= last:
                    continue
                if row["version"] > last + 1:  # missed some: the store has them
                    gap = True
                    break
                yield row
                last = row["version"]
                if row["type"] == FINISHED:
                    return
            if gap or len(rows) >= READ_LIMIT:
                rows = await tail.events_after(execution_id, last)
                continue
            news = await watch.next(wait_s)
            await between()
            # None: this subscriber fell behind its inbox; the store has what it missed.
            rows = await tail.events_after(execution_id, last) if news is None else news


def access_check(svc: Services, principal: Principal) -> Callable[[], Awaitable[None]]:
    """A subscription outlives the check that started it: its token expiring, its session
    ending or its access changing ends it too (checked every few seconds, not per event).
    Resume with a fresh token and `afterVersion`."""
    next_check = time.monotonic() + ACCESS_CHECK_S

    async def still_allowed() -> None:
        nonlocal next_check
        if time.monotonic() < next_check:
            return
        next_check = time.monotonic() + ACCESS_CHECK_S
        if time.time() > principal.expires_at:
            raise unauthenticated("the access token has expired; resubscribe with a new one")
        reason = await svc.revocations.check(principal, batched=True)
        if reason is not None:
            raise unauthenticated(reason)

    return still_allowed


@strawberry.type
class ExecutionSubscription:
    @strawberry.subscription(
        permission_classes=SECURED,
        description="The execution's events after `afterVersion` (all if omitted), then each "
        "new one as it happens, in version order; ends after ExecutionFinished.",
    )
    async def execution_updates(
        self, info: Info[Any, Any], execution_id: strawberry.ID, after_version: int = 0
    ) -> AsyncGenerator[ExecutionUpdate, None]:
        who, svc = caller(info), services(info)
        eid = parse_id(execution_id, "execution")
        # Straight from the event store: an execution is watchable the moment it is queued.
        bounds = await svc.execution_tail.first_and_last(eid)
        if bounds is None or bounds[0]["type"] != STARTED:  # a credential is no execution
            raise not_found(f"execution {execution_id}")
        first, latest = bounds
        if first["workspace_id"] != who.workspace_id:
            raise not_found(f"execution {execution_id}")
        if latest["type"] == FINISHED and latest["version"] <= after_version:
            return  # finished, and the caller has seen it all
        check = access_check(svc, info.context["principal"])
        key = str(eid)
        # Closed at once when the client goes: its watch must not outlive it.
        async with aclosing(follow(svc.execution_tail, eid, after_version, check)) as rows:
            async for row in rows:
                yield ExecutionUpdate.from_row(key, row)


__all__ = ["ExecutionSubscription", "follow"]
