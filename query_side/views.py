"""Read-model queries: a few lines of SQL each, always scoped to the caller's workspace."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from query_side.errors import BadCursor

Row = dict[str, Any]
MAX_PAGE = 200


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    has_next: bool
    end_cursor: str | None


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([str(p) for p in parts]).encode()).decode()


def decode_cursor(cursor: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise BadCursor("the cursor is malformed") from exc
    if not isinstance(parts, list) or len(parts) != size:
        raise BadCursor("the cursor is malformed")
    return [str(p) for p in parts]


def page_size(first: int) -> int:
    if first < 1 or first > MAX_PAGE:
        raise BadCursor(f"first must be between 1 and {MAX_PAGE}")
    return first


async def list_workflows(
    conn: psycopg.AsyncConnection[Any],
    workspace_id: str,
    first: int = 50,
    after: str | None = None,
    search: str | None = None,
) -> Page:
    """Workflows of a workspace, oldest first, optionally filtered by a name fragment."""
    size = page_size(first)
    sql = "SELECT * FROM read.workflows WHERE workspace_id = %s"
    params: list[Any] = [workspace_id]
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        sql += " AND name ILIKE %s"
        params.append(f"%{escaped}%")
    if after:
        created_at, last_id = decode_cursor(after, 2)
        sql += " AND (created_at, id) > (%s::timestamptz, %s::uuid)"
        params += [cursor_time(created_at), cursor_uuid(last_id)]
    sql += " ORDER BY created_at, id LIMIT %s"
    params.append(size + 1)
    return await page(conn, sql, params, size, lambda r: (r["created_at"].isoformat(), r["id"]))


async def page(
    conn: psycopg.AsyncConnection[Any],
    sql: str,
    params: list[Any],
    size: int,
    cursor_of: Callable[[Row], tuple[Any, ...]],
) -> Page:
    """Run a query that asked for one row more than the page, and cut the page."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    kept = rows[:size]
    return Page(kept, len(rows) > size, encode_cursor(*cursor_of(kept[-1])) if kept else None)


def cursor_uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise BadCursor("the cursor is malformed") from exc


def cursor_time(value: str) -> datetime:
    """A cursor's time (the ISO form pages hand out, with its zone)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadCursor("the cursor is malformed") from exc
    if at.tzinfo is None:
        raise BadCursor("the cursor is malformed")
    return at


def cursor_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise BadCursor("the cursor is malformed")
    return int(value)


async def comment_threads(
    conn: psycopg.AsyncConnection[Any],
    workspace_id: str,
    workflow_id: UUID,
    node_id: str | None,
    include_resolved: bool,
) -> list[Row] | None:
    """A workflow's comment threads (on one node when `node_id`), oldest first, each with its
    comments; a thread on a node that was removed is `orphaned`, and is not one of the threads
    of a node given the same id later. None: no such workflow."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT 1 FROM read.workflows WHERE id = %s AND workspace_id = %s",
            (workflow_id, workspace_id),
        )
        if await cur.fetchone() is None:
            return None
        await cur.execute(
            "SELECT t.thread_id, t.node_id, t.resolved, t.resolved_by, t.resolved_at,"
            " t.created_at, t.orphaned FROM read.workflow_threads t WHERE t.workflow_id = %s"
            " AND (%s::text IS NULL OR (t.node_id = %s AND NOT t.orphaned))"
            " AND (%s OR NOT t.resolved) ORDER BY t.created_at, t.thread_id",
            (workflow_id, node_id, node_id, include_resolved),
        )
        threads = await cur.fetchall()
        if not threads:
            return []
        await cur.execute(
            "SELECT comment_id, thread_id, author, body, mentions, created_at, edited_at,"
            " deleted_at, deleted_by FROM read.workflow_comments WHERE workflow_id = %s"
            " AND thread_id = ANY(%s) ORDER BY created_at, comment_id",
            (workflow_id, [t["thread_id"] for t in threads]),
        )
        by_thread: dict[str, list[Row]] = {}
        for comment in await cur.fetchall():
            by_thread.setdefault(comment["thread_id"], []).append(comment)
    for thread in threads:
        thread["comments"] = by_thread.get(thread["thread_id"], [])
    return threads


async def get_workflow(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, workflow_id: UUID
) -> Row | None:
    """One workflow with its nodes, edges and published versions."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM read.workflows WHERE id = %s AND workspace_id = %s",
            (workflow_id, workspace_id),
        )
        workflow = await cur.fetchone()
        if workflow is None:
            return None
        await cur.execute(
            "SELECT node_id, type, name, config, x, y FROM read.workflow_nodes"
            " WHERE workflow_id = %s ORDER BY node_id",
            (workflow_id,),
        )
        workflow["nodes"] = await cur.fetchall()
        await cur.execute(
            "SELECT edge_id, source_id, target_id, label, condition FROM read.workflow_edges"
            " WHERE workflow_id = %s ORDER BY edge_id",
            (workflow_id,),
        )
        workflow["edges"] = await cur.fetchall()
        await cur.execute(
            "SELECT node_id, holder, expires_at FROM read.workflow_locks"
            " WHERE workflow_id = %s AND expires_at > now() ORDER BY node_id",
            (workflow_id,),
        )
        workflow["locks"] = await cur.fetchall()
        await cur.execute(
            "SELECT number, aggregate_version, note, published_at, published_by"
            " FROM read.workflow_versions WHERE workflow_id = %s ORDER BY number",
            (workflow_id,),
        )
        workflow["versions"] = await cur.fetchall()
    return workflow


async def workflow_version(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, workflow_id: UUID
) -> int | None:
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT version FROM read.workflows WHERE id = %s AND workspace_id = %s",
            (workflow_id, workspace_id),
        )
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def history(
    conn: psycopg.AsyncConnection[Any],
    workspace_id: str,
    workflow_id: UUID,
    first: int = 50,
    after: str | None = None,
) -> Page:
    """The workflow's events, newest first, with who and when."""
    size = page_size(first)
    sql = (
        "SELECT version, type, actor_id, occurred_at, payload FROM read.workflow_history"
        " WHERE workflow_id = %s AND workspace_id = %s"
    )
    params: list[Any] = [workflow_id, workspace_id]
    if after:
        (version,) = decode_cursor(after, 1)
        sql += " AND version < %s"
        params.append(cursor_int(version))
    sql += " ORDER BY version DESC LIMIT %s"
    params.append(size + 1)
    return await page(conn, sql, params, size, lambda r: (r["version"],))


#: Workflows of a workspace with a `trigger.webhook` on a path: in the draft, or in the latest
#: published version (the one a webhook starts: a draft edit of the path, or of the trigger
#: away, must not silence what is published; one graph per workflow is looked at).
_LISTENING = (
    "SELECT n.workflow_id FROM read.workflow_nodes n WHERE n.workspace_id = %(ws)s"
    " AND n.type = 'trigger.webhook' AND n.config->>'path' = %(path)s"
    " UNION SELECT v.workflow_id FROM read.workflows w JOIN read.workflow_versions v"
    " ON v.workflow_id = w.id AND v.number = w.published_version"
    " WHERE w.workspace_id = %(ws)s AND v.graph->'nodes' @> %(listening)s::jsonb"
)


def _listening(workspace_id: str, path: str) -> dict[str, Any]:
    listening = json.dumps([{"type": "trigger.webhook", "config": {"path": path}}])
    return {"ws": workspace_id, "path": path, "listening": listening}


async def webhook_workflows(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, path: str
) -> list[UUID]:
    """Workflows of the workspace with a `trigger.webhook` on `path` (draft or published)."""
    cur = await conn.execute(_LISTENING, _listening(workspace_id, path))
    return [row[0] for row in await cur.fetchall()]


async def webhook_workflows_or_unfolded(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, path: str, published: dict[UUID, int]
) -> list[UUID]:
    """`webhook_workflows`, and of `published` (workflow → version number, from the event
    store) those whose version the read model does not have yet, in one snapshot: a publish
    folded meanwhile is in one part or the other."""
    cur = await conn.execute(
        _LISTENING + " UNION SELECT r.w FROM unnest(%(ids)s::uuid[], %(numbers)s::integer[])"
        " AS r(w, n) WHERE NOT EXISTS (SELECT 1 FROM read.workflow_versions v"
        " WHERE v.workflow_id = r.w AND v.number >= r.n)",
        {
            **_listening(workspace_id, path),
            "ids": list(published),
            "numbers": list(published.values()),
        },
    )
    return [row[0] for row in await cur.fetchall()]
