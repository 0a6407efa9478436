"""Comment threads on the Workflow aggregate: threads on the workflow or a node, replies,
author-only edits, author-or-admin deletes leaving tombstones, resolve/reopen, mentions of
members only, and threads outliving their node."""

from __future__ import annotations

from functools import reduce
from uuid import uuid4

import pytest

from command_side.errors import Forbidden, NotFound, ValidationFailed
from command_side.workflow import commands as c
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from command_side.workflow.rebase import overlap

ADA = Meta(actor_id="ada", workspace_id="ws1", client_op_id=None)
BOB = Meta(actor_id="bob", workspace_id="ws1", client_op_id=None)
MEMBERS = frozenset({"ada", "bob"})


def graph() -> Workflow:
    w = Workflow.create(uuid4(), "w", "", ADA)
    w.add_node("data.transform", "a", {}, 0, 0, ADA, node_id="a")
    return w


def test_threads_replies_edits_and_tombstones() -> None:
    w = graph()
    on_node = w.add_comment("a", "Is **this** right? @bob", ["bob"], MEMBERS, ADA)
    on_workflow = w.add_comment(None, "Ship it", [], MEMBERS, BOB)
    reply = w.reply(on_node, "Yes", [], MEMBERS, BOB)
    assert w.comments[reply]["thread_id"] == on_node
    assert w.threads[on_workflow]["node_id"] is None
    with pytest.raises(Forbidden):
        w.edit_comment(reply, "No", [], MEMBERS, ADA)  # not hers
    w.edit_comment(reply, "Yes, now", [], MEMBERS, BOB)
    with pytest.raises(Forbidden):
        w.delete_comment(reply, False, ADA)  # an editor may not delete others' comments
    w.delete_comment(reply, True, ADA)  # an admin may
    with pytest.raises(NotFound):
        w.edit_comment(reply, "again", [], MEMBERS, BOB)  # a tombstone takes no edits
    w.delete_comment(on_workflow, False, BOB)  # its author may
    kinds = [type(e).__name__ for e in w.collect_events()]
    assert kinds.count("CommentDeleted") == 2 and kinds.count("CommentEdited") == 1


def test_mentions_must_be_members_and_bodies_must_say_something() -> None:
    w = graph()
    before = len(w.pending_events)
    with pytest.raises(ValidationFailed, match="members"):
        w.add_comment(None, "hi @mallory", ["mallory"], MEMBERS, ADA)
    with pytest.raises(ValidationFailed):
        w.add_comment(None, "   ", [], MEMBERS, ADA)
    with pytest.raises(ValidationFailed):
        w.add_comment(None, "x" * 10_001, [], MEMBERS, ADA)
    with pytest.raises(NotFound):
        w.add_comment("nope", "on a missing node", [], MEMBERS, ADA)
    assert len(w.pending_events) == before


def test_resolve_and_reopen_and_threads_outlive_their_node() -> None:
    w = graph()
    thread = w.add_comment("a", "Check the URL", [], MEMBERS, ADA)
    w.resolve_thread(thread, True, BOB)
    with pytest.raises(ValidationFailed):
        w.resolve_thread(thread, True, BOB)
    w.resolve_thread(thread, False, ADA)
    w.remove_node("a", ADA)
    w.reply(thread, "The node is gone; keeping the note", [], MEMBERS, BOB)
    folded = reduce(lambda agg, e: e.mutate(agg), w.collect_events(), None)
    assert folded.threads == w.threads and folded.comments == w.comments  # type: ignore[union-attr]


def test_comments_never_conflict_with_concurrent_graph_edits() -> None:
    w = graph()
    w.collect_events()
    w.add_comment("a", "note", [], MEMBERS, ADA)
    commented = w.collect_events()
    move = c.MoveNode(workflow_id=w.id, node_id="a", x=1, y=1)
    assert overlap(move, commented) == frozenset()
    update = c.UpdateNode(workflow_id=w.id, node_id="a", name="n")
    assert overlap(update, commented) == frozenset()
