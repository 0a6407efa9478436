"""Which parts of a workflow an event changes and a command depends on.

Two writers that raced are reconciled by comparing these sets: a command whose footprint does
not meet what the intervening events changed is re-applied on the newer version; otherwise it
is a real conflict. Node positions are last-writer-wins, so a move depends on the node's
existence only. Locks and comments sit beside the graph: they conflict with no graph edit, and
a publish (which freezes the graph, not the leases or the review threads) ignores them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from command_side.workflow import commands as c

#: Depends on every part of the workflow; an event changing this may have changed anything.
EVERYTHING = "*"
#: Depends on every part a published version holds (what `Workflow.graph()` returns: name,
#: description, nodes with their config and positions, edges, the earlier publishes).
GRAPH = "graph"
#: Parts beside the graph, which no version holds: node leases and review threads.
_BESIDE_THE_GRAPH = ("lock:", "comment:", "thread:")


def changed_by(event: Any) -> frozenset[str]:
    """The parts of the workflow a stored Workflow event changed."""
    kind = type(event).__name__
    if kind == "Renamed":
        return frozenset({"workflow/name"})
    if kind == "DescriptionChanged":
        return frozenset({"workflow/description"})
    if kind == "NodeAdded":
        return frozenset({f"node:{event.node_id}"})
    if kind == "NodeUpdated":
        return frozenset({f"node:{event.node_id}/content"})
    if kind == "NodeMoved":
        return frozenset({f"node:{event.node_id}/position"})
    if kind == "NodeRemoved":
        removed = {f"node:{event.node_id}", f"node:{event.node_id}/content"}
        return frozenset(removed | {f"edge:{e}" for e in event.removed_edge_ids})
    if kind == "NodesConnected":
        return frozenset({f"edge:{event.edge_id}", f"pair:{event.source_id}>{event.target_id}"})
    if kind == "NodesDisconnected":
        return frozenset({f"edge:{event.edge_id}"})
    if kind == "Published":
        return frozenset({"workflow/published"})
    if kind == "CommentAdded":
        return frozenset({f"comment:{event.comment_id}", f"thread:{event.thread_id}"})
    if kind in ("CommentEdited", "CommentDeleted"):
        return frozenset({f"comment:{event.comment_id}"})
    if kind in ("ThreadResolved", "ThreadReopened"):
        return frozenset({f"thread:{event.thread_id}"})
    if kind in ("NodeLocked", "LockRenewed", "NodeUnlocked", "LockBroken", "LockExpired"):
        # Edits re-check locks when they are re-applied: they need not conflict with these.
        return frozenset({f"lock:{event.node_id}"})
    return frozenset({EVERYTHING})


def depends_on(command: object) -> frozenset[str]:
    """The parts of the workflow a command's outcome depends on."""
    match command:
        case c.RenameWorkflow():
            return frozenset({"workflow/name"})
        case c.ChangeDescription():
            return frozenset({"workflow/description"})
        case c.AddNode(node_id=node_id):
            return frozenset({f"node:{node_id}"} if node_id else set())
        case c.UpdateNode(node_id=node_id):
            return frozenset({f"node:{node_id}", f"node:{node_id}/content"})
        case c.MoveNode(node_id=node_id) | c.RemoveNode(node_id=node_id):
            return frozenset({f"node:{node_id}"})
        case c.ConnectNodes(source_id=s, target_id=t):
            return frozenset({f"node:{s}", f"node:{t}", f"pair:{s}>{t}"})
        case c.DisconnectNodes(edge_id=edge_id):
            return frozenset({f"edge:{edge_id}"})
        case c.AddComment(node_id=node_id):
            return frozenset({f"node:{node_id}"} if node_id else set())
        case (
            c.ReplyToComment(comment_id=comment_id)
            | c.EditComment(comment_id=comment_id)
            | c.DeleteComment(comment_id=comment_id)
        ):
            return frozenset({f"comment:{comment_id}"})
        case c.ResolveThread(thread_id=thread_id):
            return frozenset({f"thread:{thread_id}"})
        case (
            c.LockNode(node_id=node_id)
            | c.RenewLock(node_id=node_id)
            | c.UnlockNode(node_id=node_id)
            | c.BreakLock(node_id=node_id)
            | c.ExpireLock(node_id=node_id)
        ):
            return frozenset({f"node:{node_id}"})
        case c.PublishWorkflow():
            return frozenset({GRAPH})
    return frozenset({EVERYTHING})


def overlap(command: object, intervening: Iterable[Any]) -> frozenset[str]:
    """What the intervening events changed that the command depends on (empty: safe to rebase)."""
    needs = depends_on(command)
    met: set[str] = set()
    for event in intervening:
        changed = changed_by(event)
        if EVERYTHING in needs or EVERYTHING in changed:
            met |= changed
        elif GRAPH in needs:
            met |= {part for part in changed if not part.startswith(_BESIDE_THE_GRAPH)}
        else:
            met |= needs & changed
    return frozenset(met)
