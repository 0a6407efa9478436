"""Commands on the Workflow aggregate: plain, imperative, immutable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class Meta:
    """Who issues a command, in which workspace, and the client's idempotency key."""

    actor_id: str
    workspace_id: str
    client_op_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class WorkflowCommand:
    """A command on one existing workflow, optionally pinned to the version the client saw."""

    workflow_id: UUID
    expected_version: int | None = None


@dataclass(frozen=True, kw_only=True)
class CreateWorkflow:
    name: str
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class RenameWorkflow(WorkflowCommand):
    name: str


@dataclass(frozen=True, kw_only=True)
class ChangeDescription(WorkflowCommand):
    description: str


@dataclass(frozen=True, kw_only=True)
class AddNode(WorkflowCommand):
    node_type: str
    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    x: float = 0.0
    y: float = 0.0
    node_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class UpdateNode(WorkflowCommand):
    node_id: str
    name: str | None = None
    config: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class MoveNode(WorkflowCommand):
    node_id: str
    x: float
    y: float


@dataclass(frozen=True, kw_only=True)
class RemoveNode(WorkflowCommand):
    node_id: str


@dataclass(frozen=True, kw_only=True)
class ConnectNodes(WorkflowCommand):
    source_id: str
    target_id: str
    label: str | None = None
    condition: str | None = None


@dataclass(frozen=True, kw_only=True)
class DisconnectNodes(WorkflowCommand):
    edge_id: str


@dataclass(frozen=True, kw_only=True)
class PublishWorkflow(WorkflowCommand):
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class LockNode(WorkflowCommand):
    node_id: str
    ttl_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class RenewLock(WorkflowCommand):
    node_id: str


@dataclass(frozen=True, kw_only=True)
class UnlockNode(WorkflowCommand):
    node_id: str


@dataclass(frozen=True, kw_only=True)
class BreakLock(WorkflowCommand):
    """An admin's: the caller's role is checked before it reaches the aggregate."""

    node_id: str


@dataclass(frozen=True, kw_only=True)
class ExpireLock(WorkflowCommand):
    """The scheduler's, when a lease ran out: nothing happens if it was renewed meanwhile."""

    node_id: str
    expires_at: float


@dataclass(frozen=True, kw_only=True)
class AddComment(WorkflowCommand):
    """`members`: the workspace's member ids, which mentions must be among (the api reads
    them; the command side does not)."""

    node_id: str | None = None
    body: str
    mentions: tuple[str, ...] = ()
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class ReplyToComment(WorkflowCommand):
    comment_id: str
    body: str
    mentions: tuple[str, ...] = ()
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class EditComment(WorkflowCommand):
    comment_id: str
    body: str
    mentions: tuple[str, ...] = ()
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class DeleteComment(WorkflowCommand):
    comment_id: str
    as_admin: bool = False


@dataclass(frozen=True, kw_only=True)
class ResolveThread(WorkflowCommand):
    thread_id: str
    resolved: bool = True


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the workflow's version after it and the id it created, if any."""

    workflow_id: UUID
    version: int
    created_id: str | None = None
