"""The Execution aggregate: decisions become events; runner reports are applied once."""

from __future__ import annotations

from functools import reduce
from typing import Any
from uuid import uuid4

import pytest

from command_side.errors import Conflict
from command_side.execution.aggregate import Execution


def started() -> Execution:
    return Execution(
        execution_id=uuid4(),
        workflow_id="w1",
        workflow_version=3,
        nodes={
            "start": {"type": "trigger.manual", "config": {}},
            "a": {"type": "data.transform", "config": {}},
            "b": {"type": "data.transform", "config": {}},
        },
        edges=[{"source": "start", "target": "a"}, {"source": "a", "target": "b"}],
        start="start",
        inputs={"n": 1},
        actor_id="u1",
        workspace_id="ws1",
    )


def replayed(events: list[Any]) -> Execution:
    return reduce(lambda aggregate, e: e.mutate(aggregate), events, None)  # type: ignore[arg-type,return-value]


def test_steps_are_scheduled_from_decisions_and_reports_advance_them() -> None:
    execution = started()
    assert [s.node_id for s in execution.advance(0.0, "orchestrator")] == ["a"]
    assert execution.advance(0.0, "orchestrator") == []  # nothing new while a runs
    assert execution.record_success("a", 1, {"x": 1}, None, "runner")
    assert not execution.record_success("a", 1, {"x": 1}, None, "runner")  # a redelivery
    assert not execution.record_success("b", 1, {}, None, "runner")  # never scheduled
    assert [s.node_id for s in execution.advance(1.0, "orchestrator")] == ["b"]
    assert not execution.record_failure("b", 2, "Oops", "stale attempt", "runner")
    assert execution.record_success("b", 1, "done", None, "runner")
    assert execution.advance(2.0, "orchestrator") == []
    assert execution.status == "SUCCEEDED"
    events = execution.collect_events()
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "ExecutionStarted",
        "StepScheduled",
        "StepSucceeded",
        "StepScheduled",
        "StepSucceeded",
        "ExecutionFinished",
    ]
    again = replayed(events)
    assert (again.status, again.steps["b"].output) == ("SUCCEEDED", "done")


def test_a_cancelled_execution_takes_no_more_reports_or_decisions() -> None:
    execution = started()
    execution.advance(0.0, "orchestrator")
    execution.cancel("not needed", "u1")
    assert execution.status == "CANCELLED"
    assert not execution.record_success("a", 1, {}, None, "runner")
    assert execution.advance(1.0, "orchestrator") == []
    with pytest.raises(Conflict):
        execution.cancel("again", "u1")


def test_skips_that_release_more_decisions_are_followed_in_one_advance() -> None:
    """A branch not taken is skipped node after node, and the execution still finishes."""
    execution = Execution(
        execution_id=uuid4(),
        workflow_id="w1",
        workflow_version=1,
        nodes={
            "start": {"type": "trigger.manual", "config": {}},
            "check": {"type": "control.if", "config": {"condition": "{{ inputs.ok }}"}},
            "yes": {"type": "data.transform", "config": {}},
            "no": {"type": "data.transform", "config": {}},
            "after_no": {"type": "data.transform", "config": {}},
        },
        edges=[
            {"source": "start", "target": "check"},
            {"source": "check", "target": "yes", "label": "true"},
            {"source": "check", "target": "no", "label": "false"},
            {"source": "no", "target": "after_no"},
        ],
        start="start",
        inputs={"ok": True},
        actor_id="u1",
        workspace_id="ws1",
    )
    execution.advance(0.0, "o")
    execution.record_success("check", 1, True, "true", "runner")
    assert [s.node_id for s in execution.advance(1.0, "o")] == ["yes"]
    assert execution.steps["after_no"].status == "skipped"
    execution.record_success("yes", 1, {}, None, "runner")
    execution.advance(2.0, "o")
    assert execution.status == "SUCCEEDED"
