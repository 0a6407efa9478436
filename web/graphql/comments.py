"""Comment threads on a workflow or its nodes: the `comments` query and its mutations.

Anyone who can see the workflow may comment, reply and resolve or reopen a thread (viewers
included: reviewing is what they are for). Only its author edits a comment; its author or an
admin deletes it, which leaves a tombstone. Mentions must be members of the workspace.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from command_side.identity import rank
from command_side.workflow import commands as c
from query_side import identity_views, views
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import parse_id
from web.graphql.mutation import run_command, workflow_payload
from web.graphql.own_writes import recorded_read
from web.graphql.types import WorkflowPayload


@strawberry.type
class Comment:
    id: strawberry.ID
    author: str
    body: str | None = strawberry.field(description="Markdown as written; null once deleted.")
    mentions: JSON
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    deleted_by: str | None


@strawberry.type
class CommentThread:
    id: strawberry.ID
    node_id: strawberry.ID | None = strawberry.field(description="Null: on the workflow.")
    orphaned: bool = strawberry.field(description="Its node was removed; the thread stays.")
    resolved: bool
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime
    comments: list[Comment]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CommentThread:
        return cls(
            id=strawberry.ID(row["thread_id"]),
            node_id=strawberry.ID(row["node_id"]) if row["node_id"] else None,
            orphaned=row["orphaned"],
            resolved=row["resolved"],
            resolved_by=row["resolved_by"],
            resolved_at=row["resolved_at"],
            created_at=row["created_at"],
            comments=[
                Comment(
                    id=strawberry.ID(m["comment_id"]),
                    author=m["author"],
                    body=m["body"],
                    mentions=m["mentions"],
                    created_at=m["created_at"],
                    edited_at=m["edited_at"],
                    deleted=m["deleted_at"] is not None,
                    deleted_by=m["deleted_by"],
                )
                for m in row["comments"]
            ],
        )


@strawberry.input
class AddCommentInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID | None = None
    body: str
    mentions: list[strawberry.ID] = strawberry.field(default_factory=list)
    client_op_id: str | None = None


@strawberry.input
class ReplyToCommentInput:
    workflow_id: strawberry.ID
    comment_id: strawberry.ID
    body: str
    mentions: list[strawberry.ID] = strawberry.field(default_factory=list)
    client_op_id: str | None = None


@strawberry.input
class EditCommentInput:
    workflow_id: strawberry.ID
    comment_id: strawberry.ID
    body: str
    mentions: list[strawberry.ID] = strawberry.field(default_factory=list)


@strawberry.input
class CommentInput:
    workflow_id: strawberry.ID
    comment_id: strawberry.ID


@strawberry.input
class ThreadInput:
    workflow_id: strawberry.ID
    thread_id: strawberry.ID


@strawberry.type
class CommentPayload:
    workflow_id: strawberry.ID
    version: int
    comment_id: strawberry.ID


async def _members(info: Info[Any, Any]) -> frozenset[str]:
    who, svc = caller(info), services(info)
    async with svc.reader(who) as conn:
        rows = await identity_views.members(conn, who.workspace_id)
    return frozenset(str(r["user_id"]) for r in rows if r["user_id"] and r["status"] == "active")


@strawberry.type
class CommentQuery:
    @strawberry.field(
        permission_classes=SECURED,
        description="Comment threads of a workflow (or of one node), open ones unless "
        "`includeResolved`, oldest first.",
    )
    async def comments(
        self,
        info: Info[Any, Any],
        workflow_id: strawberry.ID,
        node_id: strawberry.ID | None = None,
        include_resolved: bool = False,
    ) -> list[CommentThread]:
        who, svc = caller(info), services(info)
        wid = parse_id(workflow_id)

        async def read() -> list[views.Row] | None:
            async with svc.reader(who) as conn:
                return await views.comment_threads(
                    conn, who.workspace_id, wid, str(node_id) if node_id else None, include_resolved
                )

        rows = await recorded_read(svc, who.workspace_id, wid, read)
        return [CommentThread.from_row(r) for r in rows]


@strawberry.type
class CommentMutation:
    @strawberry.mutation(permission_classes=SECURED, description="Start a thread.")
    async def add_comment(self, info: Info[Any, Any], input: AddCommentInput) -> CommentPayload:
        command = c.AddComment(
            workflow_id=parse_id(input.workflow_id),
            node_id=str(input.node_id) if input.node_id else None,
            body=input.body,
            mentions=tuple(str(m) for m in input.mentions),
            members=await _members(info),
        )
        result = await run_command(info, command, input.client_op_id)
        return _comment_payload(result)

    @strawberry.mutation(permission_classes=SECURED, description="Reply in a thread.")
    async def reply_to_comment(
        self, info: Info[Any, Any], input: ReplyToCommentInput
    ) -> CommentPayload:
        command = c.ReplyToComment(
            workflow_id=parse_id(input.workflow_id),
            comment_id=str(input.comment_id),
            body=input.body,
            mentions=tuple(str(m) for m in input.mentions),
            members=await _members(info),
        )
        result = await run_command(info, command, input.client_op_id)
        return _comment_payload(result)

    @strawberry.mutation(permission_classes=SECURED, description="Its author only.")
    async def edit_comment(self, info: Info[Any, Any], input: EditCommentInput) -> WorkflowPayload:
        command = c.EditComment(
            workflow_id=parse_id(input.workflow_id),
            comment_id=str(input.comment_id),
            body=input.body,
            mentions=tuple(str(m) for m in input.mentions),
            members=await _members(info),
        )
        return workflow_payload(await run_command(info, command, None))

    @strawberry.mutation(
        permission_classes=SECURED, description="Its author or an admin; a tombstone stays."
    )
    async def delete_comment(self, info: Info[Any, Any], input: CommentInput) -> WorkflowPayload:
        command = c.DeleteComment(
            workflow_id=parse_id(input.workflow_id),
            comment_id=str(input.comment_id),
            as_admin=rank(caller(info).role) >= rank("admin"),
        )
        return workflow_payload(await run_command(info, command, None))

    @strawberry.mutation(permission_classes=SECURED)
    async def resolve_thread(self, info: Info[Any, Any], input: ThreadInput) -> WorkflowPayload:
        command = c.ResolveThread(
            workflow_id=parse_id(input.workflow_id), thread_id=str(input.thread_id)
        )
        return workflow_payload(await run_command(info, command, None))

    @strawberry.mutation(permission_classes=SECURED)
    async def reopen_thread(self, info: Info[Any, Any], input: ThreadInput) -> WorkflowPayload:
        command = c.ResolveThread(
            workflow_id=parse_id(input.workflow_id),
            thread_id=str(input.thread_id),
            resolved=False,
        )
        return workflow_payload(await run_command(info, command, None))


def _comment_payload(result: c.CommandResult) -> CommentPayload:
    return CommentPayload(
        workflow_id=strawberry.ID(str(result.workflow_id)),
        version=result.version,
        comment_id=strawberry.ID(result.created_id or ""),
    )
