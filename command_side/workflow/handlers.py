"""Command handlers: pure functions that apply one command to a Workflow aggregate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from command_side.workflow import commands as c
from command_side.workflow.aggregate import Workflow

#: Namespace for workflow ids derived from a create's idempotency key.
WORKFLOW_ID_NAMESPACE = uuid5(NAMESPACE_URL, "https://autoops.dev/workflow")


def workflow_id_for(create_meta: c.Meta) -> UUID:
    """A repeated create with the same idempotency key addresses the same workflow."""
    if create_meta.client_op_id is None:
        return uuid4()
    return uuid5(WORKFLOW_ID_NAMESPACE, f"{create_meta.workspace_id}/{create_meta.client_op_id}")


def create_workflow(command: c.CreateWorkflow, meta: c.Meta, workflow_id: UUID) -> Workflow:
    return Workflow.create(workflow_id, command.name, command.description, meta)


def _rename(w: Workflow, cmd: c.RenameWorkflow, meta: c.Meta) -> str | None:
    w.rename(cmd.name, meta)
    return None


def _describe(w: Workflow, cmd: c.ChangeDescription, meta: c.Meta) -> str | None:
    w.change_description(cmd.description, meta)
    return None


def _add(w: Workflow, cmd: c.AddNode, meta: c.Meta) -> str | None:
    return w.add_node(cmd.node_type, cmd.name, cmd.config, cmd.x, cmd.y, meta, cmd.node_id)


def _update(w: Workflow, cmd: c.UpdateNode, meta: c.Meta) -> str | None:
    w.update_node(cmd.node_id, cmd.name, cmd.config, meta)
    return None


def _move(w: Workflow, cmd: c.MoveNode, meta: c.Meta) -> str | None:
    w.move_node(cmd.node_id, cmd.x, cmd.y, meta)
    return None


def _remove(w: Workflow, cmd: c.RemoveNode, meta: c.Meta) -> str | None:
    w.remove_node(cmd.node_id, meta)
    return None


def _connect(w: Workflow, cmd: c.ConnectNodes, meta: c.Meta) -> str | None:
    return w.connect(cmd.source_id, cmd.target_id, cmd.label, cmd.condition, meta)


def _disconnect(w: Workflow, cmd: c.DisconnectNodes, meta: c.Meta) -> str | None:
    w.disconnect(cmd.edge_id, meta)
    return None


def _publish(w: Workflow, cmd: c.PublishWorkflow, meta: c.Meta) -> str | None:
    return str(w.publish(cmd.note, meta))


# Lock commands answer with the lease's end (epoch seconds), or who held a broken lock.


def _lock(w: Workflow, cmd: c.LockNode, meta: c.Meta) -> str | None:
    return repr(w.lock_node(cmd.node_id, cmd.ttl_s, meta, time.time()))


def _renew(w: Workflow, cmd: c.RenewLock, meta: c.Meta) -> str | None:
    return repr(w.renew_lock(cmd.node_id, meta, time.time()))


def _unlock(w: Workflow, cmd: c.UnlockNode, meta: c.Meta) -> str | None:
    w.unlock_node(cmd.node_id, meta, time.time())
    return None


def _break(w: Workflow, cmd: c.BreakLock, meta: c.Meta) -> str | None:
    return w.break_lock(cmd.node_id, meta, time.time())


def _expire(w: Workflow, cmd: c.ExpireLock, meta: c.Meta) -> str | None:
    w.expire_lock(cmd.node_id, cmd.expires_at, time.time())
    return None


def _comment(w: Workflow, cmd: c.AddComment, meta: c.Meta) -> str | None:
    return w.add_comment(cmd.node_id, cmd.body, list(cmd.mentions), cmd.members, meta)


def _reply(w: Workflow, cmd: c.ReplyToComment, meta: c.Meta) -> str | None:
    return w.reply(cmd.comment_id, cmd.body, list(cmd.mentions), cmd.members, meta)


def _edit_comment(w: Workflow, cmd: c.EditComment, meta: c.Meta) -> str | None:
    w.edit_comment(cmd.comment_id, cmd.body, list(cmd.mentions), cmd.members, meta)
    return None


def _delete_comment(w: Workflow, cmd: c.DeleteComment, meta: c.Meta) -> str | None:
    w.delete_comment(cmd.comment_id, cmd.as_admin, meta)
    return None


def _resolve(w: Workflow, cmd: c.ResolveThread, meta: c.Meta) -> str | None:
    w.resolve_thread(cmd.thread_id, cmd.resolved, meta)
    return None


HANDLERS: dict[type[Any], Callable[[Workflow, Any, c.Meta], str | None]] = {
    c.AddComment: _comment,
    c.ReplyToComment: _reply,
    c.EditComment: _edit_comment,
    c.DeleteComment: _delete_comment,
    c.ResolveThread: _resolve,
    c.RenameWorkflow: _rename,
    c.ChangeDescription: _describe,
    c.AddNode: _add,
    c.UpdateNode: _update,
    c.MoveNode: _move,
    c.RemoveNode: _remove,
    c.ConnectNodes: _connect,
    c.DisconnectNodes: _disconnect,
    c.PublishWorkflow: _publish,
    c.LockNode: _lock,
    c.RenewLock: _renew,
    c.UnlockNode: _unlock,
    c.BreakLock: _break,
    c.ExpireLock: _expire,
}


def apply(workflow: Workflow, command: c.WorkflowCommand, meta: c.Meta) -> c.CommandResult:
    """Apply a command to the aggregate (pending events accumulate on it) and say what it did."""
    created = HANDLERS[type(command)](workflow, command, meta)
    return c.CommandResult(workflow.id, workflow.version, created)
