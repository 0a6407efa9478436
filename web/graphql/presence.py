"""Presence over GraphQL: the `presence` subscription is the editor's session (joining when it
starts, heard of while it lives, leaving when it ends) and streams who is on the workflow;
`updateCursor` moves the caller's cursor and selection."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from web.auth import SECURED
from web.auth.permissions import unauthenticated
from web.graphql.context import caller, services
from web.graphql.errors import graphql_error, not_found, parse_id
from web.graphql.subscription import ACCESS_CHECK_S
from web.presence import UNCHANGED, Unchanged


@strawberry.type
class PresenceMember:
    session_id: strawberry.ID
    user_id: str
    selected_node_id: strawberry.ID | None
    cursor: JSON | None = strawberry.field(description="{x, y} on the canvas, or null.")
    last_seen: datetime


@strawberry.type
class PresenceUpdate:
    session_id: strawberry.ID = strawberry.field(
        description="Your session: give it to updateCursor."
    )
    members: list[PresenceMember]


@strawberry.input(
    description="What to change in your presence session: a field left out stays as it was."
)
class UpdateCursorInput:
    workflow_id: strawberry.ID
    session_id: strawberry.ID
    x: float | None = strawberry.field(
        default=strawberry.UNSET,
        description="The cursor, with y: both numbers, both null (off the canvas) or both "
        "left out (unchanged).",
    )
    y: float | None = strawberry.field(default=strawberry.UNSET, description="See x.")
    selected_node_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description="The node you have selected; null: none; left out: unchanged.",
    )


@strawberry.type
class PresenceSubscription:
    @strawberry.subscription(
        permission_classes=SECURED,
        description="Join the workflow's presence for as long as this subscription lives, and "
        "get everyone on it (you included) now and whenever it changes; members whose "
        "connection went silent drop out after AUTOOPS_PRESENCE_TIMEOUT_S.",
    )
    async def presence(
        self,
        info: Info[Any, Any],
        workflow_id: strawberry.ID,
        selected_node_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[PresenceUpdate, None]:
        who, svc = caller(info), services(info)
        principal = info.context["principal"]
        wid = parse_id(workflow_id)
        if await svc.tail.workspace_of(wid) != who.workspace_id:
            raise not_found(f"workflow {workflow_id}")
        presence, ws, key = svc.presence, who.workspace_id, str(wid)
        session = uuid4().hex
        beat = max(presence.timeout_s / 3, 0.2)
        node = str(selected_node_id) if selected_node_id else None
        async with presence.watch(ws, key) as changes:
            await presence.join(ws, key, session, who.actor_id, node)
            try:
                last: list[dict[str, Any]] | None = None
                next_beat = time.monotonic() + beat
                next_check = time.monotonic() + ACCESS_CHECK_S
                while True:
                    members = await presence.members(ws, key)
                    shown = [{k: v for k, v in m.items() if k != "seen"} for m in members]
                    if shown != last:
                        last = shown
                        yield PresenceUpdate(
                            session_id=strawberry.ID(session),
                            members=[_member(m) for m in members],
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changes.get(), max(next_beat - time.monotonic(), 0))
                    if time.monotonic() >= next_beat:
                        await presence.touch(ws, key, session)
                        next_beat = time.monotonic() + beat
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + ACCESS_CHECK_S
                        if time.time() > principal.expires_at:
                            raise unauthenticated("the access token has expired")
                        reason = await svc.revocations.check(principal, batched=True)
                        if reason is not None:
                            raise unauthenticated(reason)
            finally:
                # Leaving must happen even when the client is gone and the task is cancelled.
                await asyncio.shield(presence.leave(ws, key, session))


@strawberry.type
class PresenceMutation:
    @strawberry.mutation(
        permission_classes=SECURED,
        description="Move your cursor (x, y) and selection in a presence session of yours; "
        "what you leave out stays as it was.",
    )
    async def update_cursor(self, info: Info[Any, Any], input: UpdateCursorInput) -> bool:
        who, svc = caller(info), services(info)
        wid = parse_id(input.workflow_id)
        moved = await svc.presence.move(
            who.workspace_id,
            str(wid),
            str(input.session_id),
            who.actor_id,
            node=_selection(input.selected_node_id),
            cursor=_cursor(input.x, input.y),
        )
        if not moved:
            raise not_found(f"presence session {input.session_id}")
        return True


def _selection(node_id: strawberry.ID | None) -> str | Unchanged | None:
    if node_id is strawberry.UNSET:
        return UNCHANGED
    return str(node_id) if node_id else None


def _cursor(x: float | None, y: float | None) -> dict[str, float] | Unchanged | None:
    if x is strawberry.UNSET and y is strawberry.UNSET:
        return UNCHANGED
    if x is None and y is None:
        return None
    if (
        x is None
        or y is None
        or x is strawberry.UNSET
        or y is strawberry.UNSET
        or not (math.isfinite(x) and math.isfinite(y))
    ):
        raise graphql_error(
            "VALIDATION", "a cursor is x and y, both finite numbers (or both null)", field="x"
        )
    return {"x": x, "y": y}


def _member(entry: dict[str, Any]) -> PresenceMember:
    return PresenceMember(
        session_id=strawberry.ID(entry["session_id"]),
        user_id=entry["user_id"],
        selected_node_id=strawberry.ID(entry["node_id"]) if entry.get("node_id") else None,
        cursor=entry.get("cursor"),
        last_seen=datetime.fromtimestamp(float(entry["seen"]), UTC),
    )
