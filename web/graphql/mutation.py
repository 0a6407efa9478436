"""Workflow mutations: each takes one `input` and returns a WorkflowPayload."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from command_side.workflow import commands as c
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import mapped_errors, parse_id
from web.graphql.types import WorkflowPayload


@strawberry.input
class CreateWorkflowInput:
    name: str
    description: str = ""
    client_op_id: str | None = None


@strawberry.input
class RenameWorkflowInput:
    workflow_id: strawberry.ID
    name: str
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class ChangeWorkflowDescriptionInput:
    workflow_id: strawberry.ID
    description: str
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class AddNodeInput:
    workflow_id: strawberry.ID
    type: str
    name: str = ""
    config: JSON = strawberry.field(default_factory=dict)
    x: float = 0.0
    y: float = 0.0
    node_id: strawberry.ID | None = None
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class UpdateNodeInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID
    name: str | None = None
    config: JSON | None = None
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class MoveNodeInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID
    x: float
    y: float
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class RemoveNodeInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class ConnectNodesInput:
    workflow_id: strawberry.ID
    source_id: strawberry.ID
    target_id: strawberry.ID
    label: str | None = None
    condition: str | None = None
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class DisconnectNodesInput:
    workflow_id: strawberry.ID
    edge_id: strawberry.ID
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class PublishWorkflowInput:
    workflow_id: strawberry.ID
    note: str = ""
    expected_version: int | None = None
    client_op_id: str | None = None


@strawberry.input
class LockNodeInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID
    ttl_seconds: float | None = strawberry.field(
        default=None, description="The lease (default 30 s, at most an hour)."
    )
    client_op_id: str | None = None


@strawberry.input
class NodeLockInput:
    workflow_id: strawberry.ID
    node_id: strawberry.ID


@strawberry.type
class LockPayload:
    """A node lock after a lock, renewal or break."""

    workflow_id: strawberry.ID
    version: int
    node_id: strawberry.ID
    holder: str | None = strawberry.field(
        description="Who holds it now (null after a break), or held it before the break."
    )
    expires_at: datetime | None


def _lock_payload(
    result: c.CommandResult, node_id: strawberry.ID, holder: str | None, expires: bool
) -> LockPayload:
    ends = float(result.created_id) if expires and result.created_id else None
    return LockPayload(
        workflow_id=strawberry.ID(str(result.workflow_id)),
        version=result.version,
        node_id=node_id,
        holder=holder,
        expires_at=datetime.fromtimestamp(ends, UTC) if ends is not None else None,
    )


async def run_command(
    info: Info[Any, Any], command: Any, client_op_id: str | None
) -> c.CommandResult:
    who = caller(info)
    meta = c.Meta(actor_id=who.actor_id, workspace_id=who.workspace_id, client_op_id=client_op_id)
    with mapped_errors():
        return await asyncio.wrap_future(services(info).bus.submit(command, meta))


def workflow_payload(result: c.CommandResult, **created: Any) -> WorkflowPayload:
    return WorkflowPayload(
        workflow_id=strawberry.ID(str(result.workflow_id)), version=result.version, **created
    )


def _target(inp: Any) -> dict[str, Any]:
    return {"workflow_id": parse_id(inp.workflow_id), "expected_version": inp.expected_version}


@strawberry.type
class WorkflowMutation:
    @strawberry.mutation(permission_classes=SECURED)
    async def create_workflow(
        self, info: Info[Any, Any], input: CreateWorkflowInput
    ) -> WorkflowPayload:
        command = c.CreateWorkflow(name=input.name, description=input.description)
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def rename_workflow(
        self, info: Info[Any, Any], input: RenameWorkflowInput
    ) -> WorkflowPayload:
        command = c.RenameWorkflow(**_target(input), name=input.name)
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def change_workflow_description(
        self, info: Info[Any, Any], input: ChangeWorkflowDescriptionInput
    ) -> WorkflowPayload:
        command = c.ChangeDescription(**_target(input), description=input.description)
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def add_node(self, info: Info[Any, Any], input: AddNodeInput) -> WorkflowPayload:
        command = c.AddNode(
            **_target(input),
            node_type=input.type,
            name=input.name,
            config=cast(dict[str, Any], input.config),
            x=input.x,
            y=input.y,
            node_id=str(input.node_id) if input.node_id else None,
        )
        result = await run_command(info, command, input.client_op_id)
        return workflow_payload(result, node_id=strawberry.ID(result.created_id or ""))

    @strawberry.mutation(permission_classes=SECURED)
    async def update_node(self, info: Info[Any, Any], input: UpdateNodeInput) -> WorkflowPayload:
        command = c.UpdateNode(
            **_target(input),
            node_id=str(input.node_id),
            name=input.name,
            config=cast(dict[str, Any] | None, input.config),
        )
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def move_node(self, info: Info[Any, Any], input: MoveNodeInput) -> WorkflowPayload:
        command = c.MoveNode(**_target(input), node_id=str(input.node_id), x=input.x, y=input.y)
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def remove_node(self, info: Info[Any, Any], input: RemoveNodeInput) -> WorkflowPayload:
        command = c.RemoveNode(**_target(input), node_id=str(input.node_id))
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(permission_classes=SECURED)
    async def connect_nodes(
        self, info: Info[Any, Any], input: ConnectNodesInput
    ) -> WorkflowPayload:
        command = c.ConnectNodes(
            **_target(input),
            source_id=str(input.source_id),
            target_id=str(input.target_id),
            label=input.label,
            condition=input.condition,
        )
        result = await run_command(info, command, input.client_op_id)
        return workflow_payload(result, edge_id=strawberry.ID(result.created_id or ""))

    @strawberry.mutation(permission_classes=SECURED)
    async def disconnect_nodes(
        self, info: Info[Any, Any], input: DisconnectNodesInput
    ) -> WorkflowPayload:
        command = c.DisconnectNodes(**_target(input), edge_id=str(input.edge_id))
        return workflow_payload(await run_command(info, command, input.client_op_id))

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Lock a node for editing (or extend your own lock): others' edits of it "
        "fail with LOCKED until you unlock it, your lease runs out, or an admin breaks it.",
    )
    async def lock_node(self, info: Info[Any, Any], input: LockNodeInput) -> LockPayload:
        command = c.LockNode(
            workflow_id=parse_id(input.workflow_id),
            node_id=str(input.node_id),
            ttl_s=input.ttl_seconds,
        )
        result = await run_command(info, command, input.client_op_id)
        return _lock_payload(result, input.node_id, caller(info).actor_id, True)

    @strawberry.mutation(permission_classes=SECURED, description="Extend your lock's lease.")
    async def renew_lock(self, info: Info[Any, Any], input: NodeLockInput) -> LockPayload:
        command = c.RenewLock(workflow_id=parse_id(input.workflow_id), node_id=str(input.node_id))
        result = await run_command(info, command, None)
        return _lock_payload(result, input.node_id, caller(info).actor_id, True)

    @strawberry.mutation(permission_classes=SECURED, description="Let go of your lock.")
    async def unlock_node(self, info: Info[Any, Any], input: NodeLockInput) -> WorkflowPayload:
        command = c.UnlockNode(workflow_id=parse_id(input.workflow_id), node_id=str(input.node_id))
        return workflow_payload(await run_command(info, command, None))

    @strawberry.mutation(
        permission_classes=SECURED, description="Admins: take a lock away from its holder."
    )
    async def break_lock(self, info: Info[Any, Any], input: NodeLockInput) -> LockPayload:
        command = c.BreakLock(workflow_id=parse_id(input.workflow_id), node_id=str(input.node_id))
        result = await run_command(info, command, None)
        return _lock_payload(result, input.node_id, result.created_id, False)

    @strawberry.mutation(permission_classes=SECURED)
    async def publish_workflow(
        self, info: Info[Any, Any], input: PublishWorkflowInput
    ) -> WorkflowPayload:
        command = c.PublishWorkflow(**_target(input), note=input.note)
        result = await run_command(info, command, input.client_op_id)
        return workflow_payload(result, version_number=int(result.created_id or 0))
