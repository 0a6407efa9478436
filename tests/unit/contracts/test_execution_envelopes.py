"""Every event an execution or a credential records leaves as an envelope that its JSON Schema
accepts, with no private field (task, credentials, dead letter, ciphertext) in it."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import jsonschema

from command_side.contracts.envelope import to_envelope
from command_side.contracts.schemas import EVENT_TYPES, schema_for
from command_side.execution.aggregate import Execution, Isolated
from command_side.execution.credentials import Credential
from command_side.execution.variables import Variables


class WithCredential(Isolated):
    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        return {n: {"kind": "http_bearer", "ciphertext": "SECRET-CIPHERTEXT"} for n in names}


def node(kind: str, **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


def recorded() -> list[Any]:
    execution = Execution(
        execution_id=uuid4(), workflow_id=str(uuid4()), workflow_version=1,
        nodes={
            "start": node("trigger.manual"),
            "call": node("http.request", url="http://x", auth={"credential": "c"},
                         retry={"max_attempts": 2, "initial_interval_s": 1}),
            "each": node("control.loop", items="{{ [1] }}"),
            "body": node("data.transform"),
            "check": node("control.if", condition="{{ true }}"),
            "no": node("data.transform"),
        },
        edges=[
            {"source": "start", "target": "call", "condition": "{{ inputs.a == 1 }}"},
            {"source": "call", "target": "each"},
            {"source": "each", "target": "body", "label": "body"},
            {"source": "each", "target": "check"},
            {"source": "check", "target": "no", "label": "false"},
        ],
        start="start", inputs={"a": 1}, actor_id="u", workspace_id="ws",
        reused={}, max_concurrency=2, timeout_s=60.0,
    )  # fmt: skip
    env = WithCredential()
    reused = Execution(
        execution_id=uuid4(), workflow_id="w", workflow_version=1,
        nodes={"start": node("trigger.manual"), "t": node("data.transform")},
        edges=[{"source": "start", "target": "t"}], start="start", inputs={}, actor_id="u",
        workspace_id="ws", reused={"t": {"output": 1, "branch": None}}, retry_of="e0",
    )  # fmt: skip
    reused.admit(0.0, "o", env)
    looped = Execution(
        execution_id=uuid4(), workflow_id="w", workflow_version=1,
        nodes={"start": node("trigger.manual"), "each": node("control.loop", items="{{ [1, 2] }}"),
               "body": node("data.transform")},
        edges=[{"source": "start", "target": "each"},
               {"source": "each", "target": "body", "label": "body"}],
        start="start", inputs={}, actor_id="u", workspace_id="ws", retry_of="e0",
        reused_items={"each": {"items": [1, 2], "body": {"workflow_id": "w", "version": 1},
                               "done": {"0": {"child_id": "c", "output": {}}}}},
    )  # fmt: skip
    looped.admit(0.0, "o", env)
    execution.admit(0.0, "o", env)
    execution.record_failure("call", 1, "HttpStatusError", "503", "r")
    execution.advance(1.0, "o", env)
    execution.wake(5.0, "o", env)
    execution.record_success("call", 2, {"status": 200}, None, "r", "runner-1", 5.0, 5.1)
    execution.advance(6.0, "o", env)
    (child,) = execution.new_children
    execution.child_finished(
        "each", 1, 0, str(child.child_id), "SUCCEEDED", {"body": {}}, None, 7.0, "o", env
    )
    credential = Credential(
        workspace_id="ws", name="c", kind="http_bearer", ciphertext="SECRET", actor_id="u"
    )
    credential.replace("http_bearer", "SECRET-2", "u", must_be_deleted=False)
    credential.delete("u")
    variables = Variables(workspace_id="ws", actor_id="u")
    variables.set("region", {"name": "eu", "zones": [1, 2]}, "u")
    variables.delete("region", "u")
    return [
        *reused.collect_events(),
        *looped.collect_events(),
        *execution.collect_events(),
        *credential.collect_events(),
        *variables.collect_events(),
    ]


def test_every_execution_event_validates_and_keeps_its_secrets() -> None:
    seen = set()
    for position, event in enumerate(recorded(), start=1):
        envelope = to_envelope("execution", event, position)
        jsonschema.validate(envelope, schema_for(envelope["type"]))
        text = json.dumps(envelope)
        assert "SECRET" not in text and '"task"' not in text and "dead_letter" not in text
        seen.add(envelope["type"])
    assert seen == {t for t in EVENT_TYPES if t.startswith("execution.")}


def test_events_stored_before_a_field_was_added_read_with_null_there() -> None:
    events = recorded()
    for kind, added in (("StepFailed", "details"), ("ExecutionFinished", "sessions")):
        old = next(e for e in events if type(e).__name__ == kind)
        old.__dict__.pop(added, None)  # as stored before `added` existed
        envelope = to_envelope("execution", old, 7)
        assert envelope["data"][added] is None
        jsonschema.validate(envelope, schema_for(envelope["type"]))
