"""Which operation a clientOpId belongs to: the event that recorded the key, compared with a
command that repeats it (the same kind, by the same actor, with the same input as the
aggregate records it). A repeat of that operation gets its first result; any other use of the
key is a conflict."""

from __future__ import annotations

from typing import Any

from command_side.validation import MAX_NAME
from command_side.workflow import commands as c
from command_side.workflow.aggregate import LOCK_TTL_S, Workflow


def _has(event: Any, kind: str, **fields: Any) -> bool:
    missing = object()
    return type(event).__name__ == kind and all(
        getattr(event, name, missing) == value for name, value in fields.items()
    )


def same_operation(command: object, meta: c.Meta, event: Any, workflow: Workflow) -> bool:
    """Whether `event`, which recorded the command's clientOpId, is this very operation: the
    same kind, by the same actor, with the same input (as the aggregate records it)."""
    if getattr(event, "actor_id", None) != meta.actor_id:
        return False
    match command:
        case c.CreateWorkflow():
            return _has(event, "Created", name=command.name.strip(),
                        description=command.description)  # fmt: skip
        case c.RenameWorkflow():
            return _has(event, "Renamed", name=command.name.strip())
        case c.ChangeDescription():
            return _has(event, "DescriptionChanged", description=command.description)
        case c.AddNode():
            name = command.name.strip()[:MAX_NAME] if command.name else command.node_type
            chosen = {} if command.node_id is None else {"node_id": command.node_id}
            return _has(event, "NodeAdded", node_type=command.node_type, name=name,
                        config=command.config, x=command.x, y=command.y, **chosen)  # fmt: skip
        case c.UpdateNode():
            renamed = None if command.name is None else command.name.strip()
            return _has(event, "NodeUpdated", node_id=command.node_id, name=renamed,
                        config=command.config)  # fmt: skip
        case c.MoveNode():
            return _has(event, "NodeMoved", node_id=command.node_id, x=command.x, y=command.y)
        case c.RemoveNode():
            return _has(event, "NodeRemoved", node_id=command.node_id)
        case c.ConnectNodes():
            return _has(event, "NodesConnected", source_id=command.source_id,
                        target_id=command.target_id, label=command.label or None,
                        condition=command.condition or None)  # fmt: skip
        case c.DisconnectNodes():
            return _has(event, "NodesDisconnected", edge_id=command.edge_id)
        case c.PublishWorkflow():
            return _has(event, "Published", note=command.note)
        case c.LockNode():
            ttl = LOCK_TTL_S if command.ttl_s is None else float(command.ttl_s)
            return _has(event, "NodeLocked", node_id=command.node_id, ttl_s=ttl)
        case c.UnlockNode():
            return _has(event, "NodeUnlocked", node_id=command.node_id)
        case c.AddComment():
            return _has(event, "CommentAdded", thread_id=getattr(event, "comment_id", None),
                        node_id=command.node_id, body=command.body,
                        mentions=list(dict.fromkeys(command.mentions)))  # fmt: skip
        case c.ReplyToComment():
            thread = getattr(workflow, "comments", {}).get(command.comment_id, {})
            return _has(event, "CommentAdded", thread_id=thread.get("thread_id"),
                        body=command.body,
                        mentions=list(dict.fromkeys(command.mentions)))  # fmt: skip
        case c.EditComment():
            return _has(event, "CommentEdited", comment_id=command.comment_id,
                        body=command.body,
                        mentions=list(dict.fromkeys(command.mentions)))  # fmt: skip
        case c.DeleteComment():
            return _has(event, "CommentDeleted", comment_id=command.comment_id)
        case c.ResolveThread():
            kind = "ThreadResolved" if command.resolved else "ThreadReopened"
            return _has(event, kind, thread_id=command.thread_id)
    return False  # the others record no clientOpId: the key belongs to another operation
