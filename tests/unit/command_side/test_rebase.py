from __future__ import annotations

from uuid import uuid4

from command_side.workflow import commands as c
from command_side.workflow import rebase
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta

META = Meta(actor_id="bob", workspace_id="ws")


def events_of(build):  # type: ignore[no-untyped-def]
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


def test_publish_conflicts_with_any_change() -> None:
    wid, events = events_of(lambda w, a, b: w.move_node(a, 5, 5, META))
    assert rebase.overlap(c.PublishWorkflow(workflow_id=wid), events)
