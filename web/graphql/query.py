"""Queries: read models only, except `atVersion` time travel, which folds the event store."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import strawberry
from strawberry.types import Info

from command_side.errors import NotFound
from query_side import views
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import mapped_errors, not_found, parse_id
from web.graphql.own_writes import read_deadline, recorded_read, wait_for_version
from web.graphql.types import (
    PageInfo,
    Workflow,
    WorkflowConnection,
    WorkflowEvent,
    WorkflowHistoryConnection,
)
from web.services import Services


async def _time_travel(
    svc: Services, workspace_id: str, workflow_id: UUID, version: int
) -> Workflow:
    try:
        aggregate = await asyncio.to_thread(svc.store.load, workflow_id, version)
    except NotFound:
        raise not_found(f"version {version} of workflow {workflow_id}") from None
    if aggregate.workspace_id != workspace_id:
        raise not_found(f"workflow {workflow_id}")
    return Workflow.from_graph(aggregate.graph(), aggregate.created_on, aggregate.modified_on)


@strawberry.type
class WorkflowQuery:
    @strawberry.field(
        permission_classes=SECURED, description="Workflows of the caller's workspace, oldest first."
    )
    async def workflows(
        self,
        info: Info[Any, Any],
        first: int = 50,
        after: str | None = None,
        search: str | None = None,
    ) -> WorkflowConnection:
        who, svc = caller(info), services(info)
        with mapped_errors():
            async with svc.reader(who) as conn:
                page = await views.list_workflows(conn, who.workspace_id, first, after, search)
        return WorkflowConnection(
            nodes=[Workflow.from_row(r) for r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        permission_classes=SECURED,
        description="One workflow. `atVersion` rebuilds it as it was from the "
        "event store; `atLeastVersion` waits (at most 2 s) for the read model.",
    )
    async def workflow(
        self,
        info: Info[Any, Any],
        id: strawberry.ID,
        at_version: int | None = None,
        at_least_version: int | None = None,
    ) -> Workflow:
        who, svc = caller(info), services(info)
        workflow_id = parse_id(id)
        if at_version is not None:
            return await _time_travel(svc, who.workspace_id, workflow_id, at_version)
        deadline = read_deadline(svc)  # one bound for both waits
        if at_least_version is not None:
            await wait_for_version(svc, who.workspace_id, workflow_id, at_least_version, deadline)

        async def read() -> dict[str, Any] | None:
            async with svc.reader(who) as conn:
                return await views.get_workflow(conn, who.workspace_id, workflow_id)

        row = await recorded_read(svc, who.workspace_id, workflow_id, read, deadline=deadline)
        return Workflow.from_row(row)

    @strawberry.field(
        permission_classes=SECURED,
        description="The workflow's events, newest first, with actor and time.",
    )
    async def workflow_history(
        self, info: Info[Any, Any], id: strawberry.ID, first: int = 50, after: str | None = None
    ) -> WorkflowHistoryConnection:
        who, svc = caller(info), services(info)
        workflow_id = parse_id(id)

        async def read() -> views.Page | None:
            async with svc.reader(who) as conn:
                if await views.workflow_version(conn, who.workspace_id, workflow_id) is None:
                    return None
                return await views.history(conn, who.workspace_id, workflow_id, first, after)

        with mapped_errors():
            page = await recorded_read(svc, who.workspace_id, workflow_id, read)
        return WorkflowHistoryConnection(
            nodes=[WorkflowEvent.from_row(str(workflow_id), r) for r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )


__all__ = ["WorkflowQuery"]
