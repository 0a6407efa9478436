from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from command_side.workflow import commands as c
from command_side.workflow import rebase
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta

META = Meta(actor_id="bob", workspace_id="ws")
ADA = Meta(actor_id="ada", workspace_id="ws")
MEMBERS = frozenset({"ada", "bob"})


def events_of(build: Callable[[Workflow, str, str], object]) -> tuple[UUID, Sequence[Any]]:
    """What `build(workflow, "a", "b")` appends to a workflow with nodes a and b."""
    w = Workflow.create(uuid4(), "w", "", META)
    a = w.add_node("data.transform", "", {}, 0, 0, META, node_id="a")
    b = w.add_node("data.transform", "", {}, 0, 0, META, node_id="b")
    w.collect_events()
    build(w, a, b)
    return w.id, w.collect_events()


def test_edits_of_other_nodes_do_not_conflict() -> None:
    wid, events = events_of(lambda w, a, b: w.update_node(b, "renamed", None, META))
    assert not rebase.overlap(c.UpdateNode(workflow_id=wid, node_id="a", name="x"), events)
    assert not rebase.overlap(c.RenameWorkflow(workflow_id=wid, name="x"), events)


def test_updating_a_removed_node_conflicts() -> None:
    wid, events = events_of(lambda w, a, b: w.remove_node(a, META))
    assert rebase.overlap(c.UpdateNode(workflow_id=wid, node_id="a", name="x"), events)
    assert rebase.overlap(c.ConnectNodes(workflow_id=wid, source_id="a", target_id="b"), events)


def test_two_moves_of_one_node_do_not_conflict_last_writer_wins() -> None:
    wid, events = events_of(lambda w, a, b: w.move_node(a, 5, 5, META))
    assert not rebase.overlap(c.MoveNode(workflow_id=wid, node_id="a", x=1, y=1), events)


def test_concurrent_content_edits_of_one_node_conflict() -> None:
    wid, events = events_of(lambda w, a, b: w.update_node(a, None, {"notes": "1"}, META))
    assert rebase.overlap(c.UpdateNode(workflow_id=wid, node_id="a", config={}), events)


@pytest.mark.parametrize(
    "change",
    [
        lambda w, a, b: w.rename("renamed", META),
        lambda w, a, b: w.change_description("what it does", META),
        lambda w, a, b: w.add_node("data.transform", "", {}, 0, 0, META, node_id="c"),
        lambda w, a, b: w.update_node(a, None, {"notes": "1"}, META),
        lambda w, a, b: w.move_node(a, 5, 5, META),  # a version holds the positions too
        lambda w, a, b: w.remove_node(a, META),
        lambda w, a, b: w.connect(a, b, None, None, META),
        lambda w, a, b: w.publish("", META),
    ],
    ids=["rename", "describe", "add", "update", "move", "remove", "connect", "publish"],
)
def test_publish_conflicts_with_any_change_of_what_a_version_holds(
    change: Callable[[Workflow, str, str], object],
) -> None:
    wid, events = events_of(change)
    assert rebase.overlap(c.PublishWorkflow(workflow_id=wid), events)


def beside_the_graph(w: Workflow, a: str, b: str) -> None:
    """A review and a lease's life: every lock, comment and thread event, one after another."""
    now = time.time()
    w.lock_node(a, 30, META, now)
    w.renew_lock(a, META, now + 20)
    w.unlock_node(a, META, now + 21)
    w.lock_node(b, 30, ADA, now)
    w.break_lock(b, META, now + 1)
    w.lock_node(b, 5, ADA, now + 2)
    w.expire_lock(b, now + 7, now + 8)
    thread = w.add_comment(a, "why a?", [], MEMBERS, ADA)
    reply = w.reply(thread, "because", [], MEMBERS, META)
    w.edit_comment(reply, "because b needs it", [], MEMBERS, META)
    w.delete_comment(reply, False, META)
    w.resolve_thread(thread, True, ADA)
    w.resolve_thread(thread, False, ADA)


def test_publish_is_rebased_over_locks_and_comments() -> None:
    wid, events = events_of(beside_the_graph)
    kinds = {type(e).__name__ for e in events}
    assert kinds == {
        "NodeLocked", "LockRenewed", "NodeUnlocked", "LockBroken", "LockExpired",
        "CommentAdded", "CommentEdited", "CommentDeleted", "ThreadResolved", "ThreadReopened",
    }  # fmt: skip
    assert rebase.overlap(c.PublishWorkflow(workflow_id=wid), events) == frozenset()
