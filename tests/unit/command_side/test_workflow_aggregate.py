from __future__ import annotations

import math
from uuid import uuid4

import pytest

from command_side.errors import NotFound, ValidationFailed
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta

META = Meta(actor_id="alice", workspace_id="ws1")


def new_workflow() -> Workflow:
    return Workflow.create(uuid4(), "Invoices", "", META)


def two_nodes() -> tuple[Workflow, str, str]:
    w = new_workflow()
    a = w.add_node("trigger.manual", "start", {}, 0, 0, META)
    b = w.add_node("http.request", "", {"url": "https://example.com"}, 100, 0, META)
    return w, a, b


def test_every_event_records_actor_workspace_and_time() -> None:
    w, a, b = two_nodes()
    w.connect(a, b, None, None, META)
    for e in w.collect_events():
        assert e.actor_id == "alice"  # type: ignore[attr-defined]
        assert e.workspace_id == "ws1"  # type: ignore[attr-defined]
        assert e.timestamp.tzinfo is not None


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationFailed):
        Workflow.create(uuid4(), name, "", META)
    w = new_workflow()
    w.collect_events()
    with pytest.raises(ValidationFailed):
        w.rename(name, META)
    assert w.collect_events() == []


def test_self_loop_duplicate_edge_and_missing_nodes_append_nothing() -> None:
    w, a, b = two_nodes()
    w.connect(a, b, "yes", None, META)
    w.collect_events()
    with pytest.raises(ValidationFailed):
        w.connect(a, a, None, None, META)
    with pytest.raises(ValidationFailed):
        w.connect(a, b, "yes", None, META)
    with pytest.raises(NotFound):
        w.connect(a, "ghost", None, None, META)
    with pytest.raises(NotFound):
        w.update_node("ghost", "x", None, META)
    with pytest.raises(NotFound):
        w.disconnect("e_missing", META)
    with pytest.raises(ValidationFailed):
        w.move_node(a, math.nan, 0, META)
    with pytest.raises(ValidationFailed):
        w.update_node(a, None, None, META)
    with pytest.raises(ValidationFailed) as broken:
        w.connect(a, b, "other", "{{ output.t > }}", META)  # a condition that does not parse
    assert broken.value.details["field"] == "condition"
    with pytest.raises(ValidationFailed):
        w.connect(a, b, "other", "output.t > 1", META)  # plain text would always hold
    with pytest.raises(ValidationFailed):
        w.connect(a, b, "error", "{{ output.t > 1 }}", META)  # taken on failure, not output
    assert w.collect_events() == []


def test_edges_with_different_labels_may_join_the_same_nodes() -> None:
    w, a, b = two_nodes()
    w.connect(a, b, "true", None, META)
    w.connect(a, b, "false", None, META)
    assert len(w.edges) == 2


def test_an_edge_with_a_condition_is_the_only_edge_between_its_nodes() -> None:
    w, a, b = two_nodes()
    w.connect(a, b, "true", None, META)
    with pytest.raises(ValidationFailed) as second:
        w.connect(a, b, "false", "{{ output.n > 1 }}", META)
    assert second.value.details["field"] == "condition"
    w2, c, d = two_nodes()
    w2.connect(c, d, "true", "{{ output.n > 1 }}", META)
    w2.collect_events()
    with pytest.raises(ValidationFailed) as plain:
        w2.connect(c, d, "false", None, META)
    assert "only edge" in str(plain.value)
    assert len(w.edges) == len(w2.edges) == 1 and w2.collect_events() == []


def test_removing_a_node_removes_its_edges() -> None:
    w, a, b = two_nodes()
    c = w.add_node("data.transform", "", {}, 0, 0, META)
    e1 = w.connect(a, b, None, None, META)
    e2 = w.connect(b, c, None, None, META)
    w.remove_node(b, META)
    assert set(w.nodes) == {a, c}
    assert e1 not in w.edges and e2 not in w.edges
    removed = w.collect_events()[-1]
    assert sorted(removed.removed_edge_ids) == sorted([e1, e2])  # type: ignore[attr-defined]


def test_publish_numbers_versions_and_refuses_an_empty_graph() -> None:
    w = new_workflow()
    with pytest.raises(ValidationFailed):
        w.publish("", META)
    w.add_node("trigger.manual", "", {}, 0, 0, META)
    assert w.publish("first", META) == 1
    assert w.publish("", META) == 2
    assert [p["version"] for p in w.published] == [2, 3]


def test_an_idempotency_key_remembers_the_first_result() -> None:
    w = new_workflow()
    meta = Meta(actor_id="alice", workspace_id="ws1", client_op_id="op-1")
    node = w.add_node("trigger.manual", "", {}, 0, 0, meta)
    result = w.result_of("op-1")
    assert result is not None
    assert (result.version, result.created_id) == (2, node)
    assert w.result_of("op-2") is None


def test_node_ids_are_checked() -> None:
    w = new_workflow()
    with pytest.raises(ValidationFailed):
        w.add_node("http.request", "", {}, 0, 0, META, node_id="has space")
    w.add_node("http.request", "", {}, 0, 0, META, node_id="fetch")
    with pytest.raises(ValidationFailed):
        w.add_node("http.request", "", {}, 0, 0, META, node_id="fetch")
    with pytest.raises(ValidationFailed):
        w.add_node("not a type!", "", {}, 0, 0, META)


def test_oversized_or_non_json_configs_are_refused() -> None:
    w = new_workflow()
    w.collect_events()
    with pytest.raises(ValidationFailed, match="limit"):
        w.add_node("http.request", "", {"notes": "x" * 70_000}, 0, 0, META)
    with pytest.raises(ValidationFailed):
        w.add_node("http.request", "", {"notes": object()}, 0, 0, META)
    node = w.add_node("http.request", "", {"notes": "ok"}, 0, 0, META)
    with pytest.raises(ValidationFailed):
        w.update_node(node, None, {"notes": "x" * 70_000}, META)
    assert len(w.collect_events()) == 1


def test_configs_must_fit_their_node_type_but_may_be_incomplete_while_edited() -> None:
    w = new_workflow()
    w.collect_events()
    with pytest.raises(ValidationFailed, match="unknown node type"):
        w.add_node("made.up", "", {}, 0, 0, META)
    with pytest.raises(ValidationFailed, match="method"):
        w.add_node("http.request", "", {"method": "FETCH"}, 0, 0, META)
    with pytest.raises(ValidationFailed, match="'verb' was unexpected"):
        w.add_node("http.request", "", {"verb": "GET"}, 0, 0, META)
    with pytest.raises(ValidationFailed, match=r"at retry\.max_attempts"):
        w.add_node("http.request", "", {"retry": {"max_attempts": 0}}, 0, 0, META)
    draft = w.add_node("http.request", "", {}, 0, 0, META)  # no url yet: a draft may wait
    with pytest.raises(ValidationFailed, match="temperature"):
        w.update_node(draft, None, {"temperature": 3}, META)  # not an http.request key
    with pytest.raises(ValidationFailed, match="url: template does not parse"):
        w.update_node(draft, None, {"url": "https://example.com/{{ inputs.id"}, META)
    w.update_node(draft, None, {"url": "https://example.com/{{ inputs.id }}"}, META)
    with pytest.raises(ValidationFailed, match="not a cron expression"):
        w.add_node("trigger.cron", "", {"expression": "every day"}, 0, 0, META)
    with pytest.raises(ValidationFailed, match="not a time zone"):
        w.add_node(
            "trigger.cron", "", {"expression": "0 9 * * 1-5", "timezone": "Mars/Base"}, 0, 0, META
        )
    w.add_node(
        "trigger.cron", "", {"expression": "0 9 * * 1-5", "timezone": "Europe/Paris"}, 0, 0, META
    )
    assert len(w.collect_events()) == 3
