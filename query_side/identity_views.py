"""Identity read models: the caller's profile, their workspaces, a workspace's members."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from query_side.views import Page, cursor_time, cursor_uuid, decode_cursor, page, page_size

Row = dict[str, Any]


async def get_user(conn: psycopg.AsyncConnection[Any], user_id: str) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, email, display_name, totp_enabled, created_at, last_login_at"
            " FROM read.users WHERE id::text = %s",
            (user_id,),
        )
        return await cur.fetchone()


async def workspaces_of(conn: psycopg.AsyncConnection[Any], user_id: str) -> list[Row]:
    """Workspaces the user is an active member of, by name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT w.workspace_id, w.name, m.role FROM read.workspace_members m"
            " JOIN read.workspaces w USING (workspace_id)"
            " WHERE m.user_id = %s AND m.status = 'active' ORDER BY w.name, w.workspace_id",
            (user_id,),
        )
        return await cur.fetchall()


async def members(conn: psycopg.AsyncConnection[Any], workspace_id: str) -> list[Row]:
    """Members and open invitations of a workspace, by email."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT member_id, user_id, email, display_name, role, status, since"
            " FROM read.workspace_members WHERE workspace_id = %s ORDER BY email",
            (workspace_id,),
        )
        return await cur.fetchall()


async def audit_log(
    conn: psycopg.AsyncConnection[Any], workspace_id: str, first: int, after: str | None
) -> Page:
    """Identity events of a workspace, newest first."""
    size = page_size(first)
    sql = "SELECT * FROM read.audit_log WHERE workspace_id = %s"
    params: list[Any] = [workspace_id]
    if after:
        occurred_at, event_id = decode_cursor(after, 2)
        sql += " AND (occurred_at, event_id) < (%s::timestamptz, %s::uuid)"
        params += [cursor_time(occurred_at), cursor_uuid(event_id)]
    sql += " ORDER BY occurred_at DESC, event_id DESC LIMIT %s"
    params.append(size + 1)
    return await page(
        conn, sql, params, size, lambda r: (r["occurred_at"].isoformat(), r["event_id"])
    )
