"""GraphQL types of accounts, workspaces and members."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from web.graphql.types import PageInfo


@strawberry.enum
class Role(Enum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    OWNER = "owner"


@strawberry.type
class UserInfo:
    id: strawberry.ID
    email: str
    display_name: str


@strawberry.type
class WorkspaceInfo:
    id: strawberry.ID
    name: str
    role: Role

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WorkspaceInfo:
        return cls(id=strawberry.ID(row["workspace_id"]), name=row["name"], role=Role(row["role"]))


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str
    expires_in: int = strawberry.field(description="Seconds until the access token expires.")
    user: UserInfo
    workspace: WorkspaceInfo


@strawberry.type
class Profile:
    id: strawberry.ID
    email: str
    display_name: str
    totp_enabled: bool
    created_at: datetime
    last_login_at: datetime | None
    workspace: WorkspaceInfo


@strawberry.type
class Member:
    id: strawberry.ID = strawberry.field(description="The user id; an invitation's own id.")
    user_id: strawberry.ID | None
    email: str
    display_name: str
    role: Role
    status: str = strawberry.field(description="`active`, or `invited` until they sign up.")
    since: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Member:
        return cls(
            id=strawberry.ID(row["member_id"]),
            user_id=strawberry.ID(row["user_id"]) if row["user_id"] else None,
            email=row["email"],
            display_name=row["display_name"],
            role=Role(row["role"]),
            status=row["status"],
            since=row["since"],
        )


@strawberry.type
class MemberPayload:
    member_id: strawberry.ID
    role: Role | None = None
    invitation_token: str | None = strawberry.field(
        default=None, description="For inviteMember: what the invitee needs to join."
    )


@strawberry.type
class TotpSetup:
    provisioning_uri: str = strawberry.field(
        description="otpauth:// URI for an authenticator app (show it as a QR code)."
    )


@strawberry.type
class AuditEntry:
    type: str = strawberry.field(description="e.g. LoginSucceeded, MemberRoleChanged.")
    aggregate_id: strawberry.ID
    actor_id: str
    occurred_at: datetime
    data: JSON

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEntry:
        return cls(
            type=row["type"],
            aggregate_id=strawberry.ID(str(row["aggregate_id"])),
            actor_id=row["actor_id"],
            occurred_at=row["occurred_at"],
            data=row["data"],
        )


@strawberry.type
class AuditLogConnection:
    nodes: list[AuditEntry]
    page_info: PageInfo
