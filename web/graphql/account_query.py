"""Queries about the caller: their profile, their workspaces, their workspace's members."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import strawberry
from strawberry.types import Info

from query_side import identity_views
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import mapped_errors, not_found
from web.graphql.identity_types import (
    AuditEntry,
    AuditLogConnection,
    Member,
    Profile,
    Role,
    WorkspaceInfo,
)
from web.graphql.types import PageInfo

#: Right after sign-up the projector may not have written the profile (or the membership that
#: names the workspace) yet.
PROFILE_WAIT_S = 2.0


@strawberry.type
class AccountQuery:
    @strawberry.field(permission_classes=SECURED, description="The signed-in user.")
    async def me(self, info: Info[Any, Any]) -> Profile:
        who, svc = caller(info), services(info)
        deadline = time.monotonic() + PROFILE_WAIT_S
        while True:
            async with svc.reader(who) as conn:
                user = await identity_views.get_user(conn, who.actor_id)
                spaces = await identity_views.workspaces_of(conn, who.actor_id)
            current = next((w for w in spaces if w["workspace_id"] == who.workspace_id), None)
            if (user is not None and current is not None) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # bounded read-your-writes wait on the projector
        if user is None:
            raise not_found(f"user {who.actor_id}")
        return Profile(
            id=strawberry.ID(str(user["id"])),
            email=user["email"],
            display_name=user["display_name"],
            totp_enabled=user["totp_enabled"],
            created_at=user["created_at"],
            last_login_at=user["last_login_at"],
            workspace=WorkspaceInfo(
                id=strawberry.ID(who.workspace_id),
                name=current["name"] if current else "",
                role=Role(who.role),
            ),
        )

    @strawberry.field(permission_classes=SECURED, description="Workspaces you belong to.")
    async def workspaces(self, info: Info[Any, Any]) -> list[WorkspaceInfo]:
        who, svc = caller(info), services(info)
        async with svc.reader(who) as conn:
            rows = await identity_views.workspaces_of(conn, who.actor_id)
        return [WorkspaceInfo.from_row(r) for r in rows]

    @strawberry.field(
        permission_classes=SECURED, description="Members and invitations of your workspace."
    )
    async def members(self, info: Info[Any, Any]) -> list[Member]:
        who, svc = caller(info), services(info)
        async with svc.reader(who) as conn:
            rows = await identity_views.members(conn, who.workspace_id)
        return [Member.from_row(r) for r in rows]

    @strawberry.field(
        permission_classes=SECURED,
        description="Sign-ins, failed sign-ins, session and member changes of your workspace, "
        "newest first.",
    )
    async def audit_log(
        self, info: Info[Any, Any], first: int = 50, after: str | None = None
    ) -> AuditLogConnection:
        who, svc = caller(info), services(info)
        with mapped_errors():
            async with svc.reader(who) as conn:
                page = await identity_views.audit_log(conn, who.workspace_id, first, after)
        return AuditLogConnection(
            nodes=[AuditEntry.from_row(r) for r in page.rows],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
        )
