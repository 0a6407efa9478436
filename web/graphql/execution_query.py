"""Queries about executions, credentials and variables: read models only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import strawberry
from strawberry.types import Info
from strawberry.types.nodes import SelectedField, Selection

from infra.artifacts import ArtifactError
from query_side import execution_views, views
from web.artifacts import artifact_store
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import mapped_errors, parse_id
from web.graphql.execution_types import (
    Artifact,
    Credential,
    Execution,
    ExecutionConnection,
    ExecutionStatus,
    Variable,
)
from web.graphql.own_writes import recorded_read
from web.graphql.types import PageInfo


def _asks_for(selections: Sequence[Selection], path: tuple[str, ...]) -> bool:
    """Whether the selection reaches the field at `path` (through fragments too)."""
    for selection in selections:
        if not isinstance(selection, SelectedField):
            if _asks_for(selection.selections, path):
                return True
        elif selection.name == path[0] and (
            len(path) == 1 or _asks_for(selection.selections, path[1:])
        ):
            return True
    return False


@strawberry.type
class ExecutionQuery:
    @strawberry.field(
        permission_classes=SECURED,
        description="Executions of the caller's workspace, newest first; of one workflow "
        "and in one status if asked.",
    )
    async def executions(
        self,
        info: Info[Any, Any],
        workflow_id: strawberry.ID | None = None,
        status: ExecutionStatus | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> ExecutionConnection:
        who, svc = caller(info), services(info)
        wid = parse_id(workflow_id) if workflow_id is not None else None
        with_steps = _asks_for(info.selected_fields[0].selections, ("nodes", "steps"))
        Listed = tuple[views.Page, dict[UUID, list[execution_views.Row]]]

        async def listed() -> Listed | None:
            async with svc.reader(who) as conn:
                if wid and await views.workflow_version(conn, who.workspace_id, wid) is None:
                    return None  # not (yet) a workflow of the caller's
                page = await execution_views.list_executions(
                    conn,
                    who.workspace_id,
                    wid,
                    status.value if status else None,
                    first,
                    after,
                )
                ids = [r["id"] for r in page.rows] if with_steps else []
                return page, await execution_views.steps_of(conn, who.workspace_id, ids)

        with mapped_errors():
            found = await listed()
            if found is None:  # the workflow is not in the read model (yet)
                assert wid is not None
                found = await recorded_read(svc, who.workspace_id, wid, listed)
        page, steps = found
        return ExecutionConnection(
            nodes=[Execution.from_row(r, steps.get(r["id"], [])) for r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )

    @strawberry.field(
        permission_classes=SECURED,
        description="One execution of the caller's workspace, with its steps.",
    )
    async def execution(self, info: Info[Any, Any], id: strawberry.ID) -> Execution | None:
        who, svc = caller(info), services(info)
        execution_id = parse_id(id, "execution")

        async def read() -> dict[str, Any] | None:
            async with svc.reader(who) as conn:
                return await execution_views.get_execution(conn, who.workspace_id, execution_id)

        row = await recorded_read(svc, who.workspace_id, execution_id, read, "execution")
        return Execution.from_row(row, row["steps"])

    @strawberry.field(
        permission_classes=SECURED,
        description="An artifact of the workspace (a screenshot, a download, an uploaded image) "
        "by its sha256: size, media type and download URL; null when there is none.",
    )
    async def artifact(self, info: Info[Any, Any], sha256: str) -> Artifact | None:
        who, svc = caller(info), services(info)
        store = artifact_store(svc.settings)
        try:
            data_size = await asyncio.to_thread(store.size, who.workspace_id, sha256)
            media_type = await asyncio.to_thread(store.media_type, who.workspace_id, sha256)
        except ArtifactError:  # unknown, malformed or another workspace's: the same answer
            return None
        return Artifact(sha256=sha256, size=data_size, media_type=media_type)

    @strawberry.field(
        permission_classes=SECURED,
        description="The workspace's credentials by name; their secrets are never readable.",
    )
    async def credentials(self, info: Info[Any, Any]) -> list[Credential]:
        who, svc = caller(info), services(info)
        async with svc.reader(who) as conn:
            rows = await execution_views.credentials(conn, who.workspace_id)
        return [Credential.from_row(r) for r in rows]

    @strawberry.field(
        permission_classes=SECURED,
        description="The workspace's variables by name (`vars` in templates).",
    )
    async def variables(self, info: Info[Any, Any]) -> list[Variable]:
        who, svc = caller(info), services(info)
        async with svc.reader(who) as conn:
            rows = await execution_views.variables(conn, who.workspace_id)
        return [Variable.from_row(r) for r in rows]


__all__ = ["ExecutionQuery"]
