"""Subscriptions: the events of one workflow, gapless from `afterVersion`, then live."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any
from uuid import UUID

import strawberry
from strawberry.types import Info

from web.auth import SECURED
from web.auth.permissions import unauthenticated
from web.graphql.context import caller, services
from web.graphql.errors import not_found, parse_id
from web.graphql.fanout import direct_sender
from web.graphql.types import WorkflowEvent
from web.tail import READ_LIMIT, EventTail, Row

#: How often a live subscription re-checks that its caller still has access.
ACCESS_CHECK_S = 5.0


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=SECURED,
        description="Events after `afterVersion` (all if omitted), "
        "then every new one as it happens, in version order.",
    )
    async def workflow_events(
        self, info: Info[Any, Any], workflow_id: strawberry.ID, after_version: int = 0
    ) -> AsyncGenerator[WorkflowEvent, None]:
        who, svc = caller(info), services(info)
        principal = info.context["principal"]
        next_check = time.monotonic() + ACCESS_CHECK_S

        async def still_allowed() -> None:
            """A subscription outlives the check that started it: its token expiring, its
            session ending or its access changing ends it too (checked every few seconds,
            not per event). Resume with a fresh token and `afterVersion`."""
            nonlocal next_check
            if time.monotonic() < next_check:
                return
            next_check = time.monotonic() + ACCESS_CHECK_S
            if time.time() > principal.expires_at:
                raise unauthenticated("the access token has expired; resubscribe with a new one")
            reason = await svc.revocations.check(principal, batched=True)
            if reason is not None:
                raise unauthenticated(reason)

        wid = parse_id(workflow_id)
        key = str(wid)
        # Straight from the event store: a workflow is watchable the moment it is created.
        if await svc.tail.workspace_of(wid) != who.workspace_id:
            raise not_found(f"workflow {workflow_id}")
        direct = direct_sender(info, svc.renderings)
        push: Callable[[Row], bool] | None = None
        if direct is not None:
            sender = direct

            def push(row: Row) -> bool:
                """A live event sent from the tail itself, not by waking this task; not
                when the access check is due (the task makes it first)."""
                if time.monotonic() >= next_check:
                    return False
                make = partial(WorkflowEvent.from_row, key, row)
                return sender.send_now(key, row["version"], make)

        start = max(after_version, 0)
        async with aclosing(_rows(svc.tail, wid, start, still_allowed, push)) as rows:
            async for row in rows:
                # The same rendered text for every subscriber with this selection; Strawberry
                # executes the rest (and what it would answer with errors).
                make = partial(WorkflowEvent.from_row, key, row)
                if direct is None or not await direct.send(key, row["version"], make):
                    yield make()


async def _rows(
    tail: EventTail,
    wid: UUID,
    last: int,
    still_allowed: Callable[[], Awaitable[None]],
    push: Callable[[Row], bool] | None = None,
) -> AsyncGenerator[Row, None]:
    """The workflow's events after version `last`, then live ones: each once, in order.

    With `push`, live events that follow `last` without a gap are handed to it by the tail
    while this generator waits (it sends them itself); whatever it does not take (a gap, a
    refusal) wakes the generator, which yields it as usual, after everything pushed."""
    # Watch before reading what was missed: nothing falls in between (repeats are skipped
    # by version).
    async with tail.watch(wid) as watch:
        if push is not None:
            send = push

            def take(rows: list[Row]) -> int:
                nonlocal last
                for taken, row in enumerate(rows):
                    version = row["version"]
                    if version <= last:
                        continue  # a repeat
                    if version > last + 1 or not send(row):
                        return taken
                    last = version
                return len(rows)

            watch.push = take
        rows = await tail.events_after(wid, last)
        while True:
            for row in rows:
                while row["version"] > last + 1:  # missed rows: read them from the store
                    page = await tail.events_after(wid, last)
                    missed = [m for m in page if m["version"] < row["version"]]
                    if not missed:
                        break
                    for m in missed:
                        yield m
                        last = m["version"]
                if row["version"] > last:
                    yield row
                    last = row["version"]
            if len(rows) >= READ_LIMIT:
                rows = await tail.events_after(wid, last)
                continue
            news = await watch.next(ACCESS_CHECK_S)
            # None: this subscriber fell behind its inbox; the store has what it missed.
            rows = await tail.events_after(wid, last) if news is None else news
            await still_allowed()
