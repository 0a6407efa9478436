"""Subscriptions: the events of one workflow, gapless from `afterVersion`, then live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from query_side import views
from web.auth import SECURED
from web.auth.permissions import unauthenticated
from web.graphql.context import caller, services
from web.graphql.errors import not_found, parse_id
from web.graphql.query import wait_for_version
from web.graphql.types import WorkflowEvent

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
            reason = await svc.revocations.check(principal)
            if reason is not None:
                raise unauthenticated(reason)

        wid = parse_id(workflow_id)
        key = str(wid)
        await wait_for_version(svc, who.workspace_id, wid, 1)
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        async with svc.hub.feed(who.workspace_id, wid) as feed:
            feed.queues.add(queue)
            try:
                async with svc.reader(who) as conn:
                    if await views.workflow_version(conn, who.workspace_id, wid) is None:
                        raise not_found(f"workflow {workflow_id}")
                last = max(after_version, 0)
                rows = await feed.hub.fetch(who.workspace_id, wid, last)
                while True:
                    for row in rows:
                        while row["version"] > last + 1:  # missed rows: read them first
                            page = await feed.hub.fetch(who.workspace_id, wid, last)
                            missing = [m for m in page if m["version"] < row["version"]]
                            if not missing:
                                break
                            for m in missing:
                                yield WorkflowEvent.from_row(key, m)
                                last = m["version"]
                        if row["version"] > last:
                            yield WorkflowEvent.from_row(key, row)
                            last = row["version"]
                    if len(rows) >= views.EVENTS_PAGE:
                        rows = await feed.hub.fetch(who.workspace_id, wid, last)
                        continue
                    try:
                        rows = await asyncio.wait_for(queue.get(), ACCESS_CHECK_S)
                    except TimeoutError:
                        rows = []
                    await still_allowed()
            finally:
                feed.queues.discard(queue)
