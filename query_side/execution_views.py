"""Execution read models: a workspace's executions, one execution's steps, credential names,
variables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from query_side.views import Page, cursor_time, cursor_uuid, decode_cursor, page, page_size

Row = dict[str, Any]

_EXECUTION = (
    "id, workspace_id, workflow_id, workflow_version, status, trigger, inputs, output, error,"
    " parent_id, retry_of, created_at, started_at, finished_at, version, updated_at"
)
_STEP = (
    "execution_id, node_id, node_type, attempt, status, input, output, branch, error,"
    " scheduled_at, not_before, started_at, finished_at, runner_id, reused_from, children"
)
_STEP_ORDER = "scheduled_at, node_id, attempt"


async def list_executions(
    conn: psycopg.AsyncConnection[Any],
    workspace_id: str,
    workflow_id: UUID | None = None,
    status: str | None = None,
    first: int = 20,
    after: str | None = None,
) -> Page:
    """Executions of a workspace, newest first, optionally of one workflow or in one status."""
    size = page_size(first)
    sql = f"SELECT {_EXECUTION} FROM read.executions WHERE workspace_id = %s"
    params: list[Any] = [workspace_id]
    if workflow_id is not None:
        sql += " AND workflow_id = %s"
        params.append(str(workflow_id))
    if status is not None:
        sql += " AND status = %s"
        params.append(status)
    if after:
        created_at, last_id = decode_cursor(after, 2)
        sql += " AND (created_at, id) < (%s::timestamptz, %s::uuid)"
        params += [cursor_time(created_at), cursor_uuid(last_id)]
    sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
    params.append(size + 1)
    return await page(conn, sql, params, size, lambda r: (r["created_at"].isoformat(), r["id"]))


async def get_execution(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, execution_id: UUID
) -> Row | None:
    """One execution with its steps (`steps`), None when the workspace has no such one."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_EXECUTION} FROM read.executions WHERE id = %s AND workspace_id = %s",
            (execution_id, workspace_id),
        )
        execution = await cur.fetchone()
    if execution is None:
        return None
    execution["steps"] = (await steps_of(conn, workspace_id, [execution_id]))[execution_id]
    return execution


async def execution_version(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, execution_id: UUID
) -> int | None:
    """The execution's read-model version, None while the read model has not got it."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT version FROM read.executions WHERE id = %s AND workspace_id = %s",
            (execution_id, workspace_id),
        )
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def steps_of(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, execution_ids: Sequence[UUID]
) -> dict[UUID, list[Row]]:
    """The steps of each execution (one query for a whole page), by scheduled time, node id
    and attempt."""
    steps: dict[UUID, list[Row]] = {i: [] for i in execution_ids}
    if not steps:
        return steps
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_STEP} FROM read.execution_steps"
            " WHERE execution_id = ANY(%s) AND workspace_id = %s"
            f" ORDER BY execution_id, {_STEP_ORDER}",
            (list(steps), workspace_id),
        )
        for row in await cur.fetchall():
            steps[row["execution_id"]].append(row)
    return steps


async def credentials(conn: psycopg.AsyncConnection[Any], workspace_id: str) -> list[Row]:
    """The workspace's credentials by name: names, kinds and who made them, never secrets."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT name, kind, created_at, created_by FROM read.credentials"
            " WHERE workspace_id = %s ORDER BY name",
            (workspace_id,),
        )
        return await cur.fetchall()


async def variables(conn: psycopg.AsyncConnection[Any], workspace_id: str) -> list[Row]:
    """The workspace's variables by name, with who changed each last."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT name, value, updated_at, updated_by FROM read.variables"
            " WHERE workspace_id = %s AND NOT deleted ORDER BY name",
            (workspace_id,),
        )
        return await cur.fetchall()
