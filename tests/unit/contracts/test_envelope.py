from __future__ import annotations

import json
from uuid import uuid4

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_side.contracts import envelope as env
from command_side.contracts.schemas import EVENT_TYPES, schema_for
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta

META = Meta(actor_id="alice", workspace_id="ws", client_op_id="op")


def test_every_event_type_has_a_schema_and_envelopes_match_it() -> None:
    w = Workflow.create(uuid4(), "w", "d", META)
    a = w.add_node("data.transform", "", {"fields": {"k": [1]}}, 1, 2, META)
    b = w.add_node("data.transform", "", {}, 1, 2, META)
    e = w.connect(a, b, "yes", "{{ x > 1 }}", META)
    w.update_node(a, "n", {"fields": {"k": 2}}, META)
    w.move_node(a, 3, 4, META)
    w.rename("v", META)
    w.change_description("dd", META)
    w.publish("p", META)
    w.disconnect(e, META)
    other = Meta(actor_id="admin", workspace_id=META.workspace_id, client_op_id=None)
    w.lock_node(b, 30, META, 1000.0)
    w.renew_lock(b, META, 1010.0)
    w.unlock_node(b, META, 1011.0)
    w.lock_node(b, 30, META, 1012.0)
    w.break_lock(b, other, 1013.0)
    w.lock_node(b, 5, META, 1014.0)
    assert w.expire_lock(b, 1019.0, 1020.0)
    members = frozenset({META.actor_id, "admin"})
    thread = w.add_comment(b, "look", ["admin"], members, META)
    answer = w.reply(thread, "ok", [], members, other)
    w.edit_comment(thread, "look here", [], members, META)
    w.resolve_thread(thread, True, other)
    w.resolve_thread(thread, False, META)
    w.delete_comment(answer, False, other)
    w.remove_node(a, META)
    events = w.collect_events()
    types = set()
    for i, event in enumerate(events, 1):
        envelope = env.to_envelope("workflow", event, i)
        jsonschema.validate(envelope, schema_for(envelope["type"]))
        assert env.decode(env.encode(envelope)) == envelope
        types.add(envelope["type"])
    assert types == {t for t in EVENT_TYPES if t.startswith("workflow.")}


def test_event_ids_are_stable_across_re_publication() -> None:
    w = Workflow.create(uuid4(), "w", "", META)
    [created] = w.collect_events()
    assert (
        env.to_envelope("workflow", created, 1)["event_id"]
        == env.to_envelope("workflow", created, 99)["event_id"]
    )


GOOD = {
    "type": "workflow.WorkflowRenamed",
    "aggregate_id": "6f1f2b8e-3c55-4d8c-9a7e-0a4f3c1d2e10",
    "aggregate_version": 2,
    "workspace_id": "ws",
    "schema_version": 1,
    "data": {"name": "n"},
}


def test_a_well_formed_envelope_decodes() -> None:
    assert env.decode(json.dumps(GOOD).encode())["data"]["name"] == "n"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type": "x"}',
        b'{"type":"x","aggregate_id":"a","aggregate_version":"1","data":{}}',
        None,  # a tombstone
        b"[" * 100_000 + b"]" * 100_000,
        *(
            json.dumps({**GOOD, **change}).encode()
            for change in (
                {"workspace_id": None},
                {"type": 1},
                {"type": "nocontext"},
                {"aggregate_id": {"a": 1}},
                {"aggregate_id": "not-a-uuid"},
                {"aggregate_version": True},
                {"aggregate_version": 0},
                {"schema_version": "abc"},
                {"schema_version": None},
                {"data": []},
            )
        ),
    ],
)
def test_malformed_messages_raise_a_typed_error(raw: bytes | None) -> None:
    with pytest.raises(env.EnvelopeError):
        env.decode(raw)


@given(st.text(), st.integers(-1e9, 1e9))
def test_upcasting_brings_old_envelopes_to_the_newest_schema(name: str, x: int) -> None:
    kind = "test.Moved"
    env.SCHEMA_VERSIONS[kind] = 3
    env.UPCASTERS[(kind, 1)] = lambda d: {"node": d["node"], "position": {"x": d["x"]}}
    env.UPCASTERS[(kind, 2)] = lambda d: {**d, "position": {**d["position"], "y": 0}}
    try:
        old = {
            "type": kind,
            "schema_version": 1,
            "aggregate_id": GOOD["aggregate_id"],
            "aggregate_version": 1,
            "workspace_id": "ws",
            "data": {"node": name, "x": x},
        }
        new = env.decode(json.dumps(old).encode())
        assert new["schema_version"] == 3
        assert new["data"] == {"node": name, "position": {"x": x, "y": 0}}
        assert env.upcast(new) == new
    finally:
        del env.SCHEMA_VERSIONS[kind]
        del env.UPCASTERS[(kind, 1)], env.UPCASTERS[(kind, 2)]
