"""What the relay sends runners for committed execution events: cancels, dead letters, and
the release of an execution's browser session when it ends."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from command_side.execution.dispatch import CONTROL_TOPIC, runner_messages
from command_side.execution.orchestrator import report_problem
from tests.unit.command_side.test_execution_aggregate import node, started


def finished(nodes: dict[str, dict[str, Any]], fail: bool = False) -> list[Any]:
    """The runner messages of the ExecutionFinished of a chain start → a (→ b)."""
    ids = list(nodes)
    execution = started(nodes, list(itertools.pairwise(ids)))
    execution.admit(0.0, "o")
    for node_id in ids[1:]:
        if fail:
            execution.record_failure(node_id, 1, "BrowserError", "gone", "r", retryable=False)
            break
        execution.record_success(node_id, 1, {"ok": True}, None, "r")
        execution.advance(1.0, "o")
    execution.advance(2.0, "o")
    (end,) = [e for e in execution.collect_events() if type(e).__name__ == "ExecutionFinished"]
    return runner_messages(end)


def test_an_execution_that_used_the_browser_releases_its_session_however_it_ends() -> None:
    nodes = {"start": node("trigger.manual"), "a": node("browser.open"), "b": node()}
    (release,) = finished(nodes)
    assert release[0] == CONTROL_TOPIC
    assert release[2]["kind"] == "release" and release[2]["pools"] == ["browser"]
    cancel, release = finished(nodes, fail=True)
    assert cancel[2]["kind"] == "cancel" and release[2]["kind"] == "release"


def test_an_execution_without_sessions_sends_nothing_when_it_succeeds() -> None:
    assert finished({"start": node("trigger.manual"), "a": node(), "b": node()}) == []


def test_a_stop_node_that_succeeds_stops_the_steps_still_running_beside_it() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "slow": node("http.request", url="http://example.test/slow"),
            "end": node("control.stop", outcome="succeed"),
        },
        [("start", "slow"), ("start", "end")],
    )
    execution.admit(0.0, "o")
    events = execution.collect_events()
    (end,) = [e for e in events if type(e).__name__ == "ExecutionFinished"]
    assert end.status == "SUCCEEDED"
    (task_id,) = [e.task["task_id"] for e in events if getattr(e, "task", None)]
    (cancel,) = runner_messages(end)
    assert cancel[0] == CONTROL_TOPIC
    assert cancel[2] == {
        "kind": "cancel",
        "execution_id": str(execution.id),
        "task_id": None,
        "reason": "SUCCEEDED",
    }
    assert end.abandoned == [task_id]


GOOD_RESULT = {
    "kind": "result",
    "task_id": "t",
    "execution_id": "e",
    "node_id": "fetch",
    "attempt": 1,
    "runner_id": "host:1",
    "ok": False,
    "output": None,
    "error": {"type": "HttpStatusError", "message": "503", "retryable": True},
    "started_at": 1_764_000_000.0,
    "finished_at": 1_764_000_001.5,
}


def test_a_well_formed_report_has_no_problem() -> None:
    assert report_problem(GOOD_RESULT) is None
    assert report_problem({**GOOD_RESULT, "ok": True, "output": {"a": [1]}, "error": None}) is None
    assert report_problem({**GOOD_RESULT, "started_at": None}) is None  # never started
    handback = {"kind": "handback", "node_id": "fetch", "attempt": 2, "runner_id": "r"}
    assert report_problem(handback) is None


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "bogus"},
        {"node_id": ""},
        {"node_id": 7},
        {"attempt": float("inf")},
        {"attempt": "1"},
        {"attempt": True},
        {"attempt": 0},
        {"runner_id": {"x": 1}},
        {"started_at": "not a time"},
        {"finished_at": 1e300},
        {"finished_at": float("nan")},
        {"ok": "yes"},
        {"error": "boom"},
        {"ok": True, "output": float("nan"), "error": None},
        {"error": {"type": "E", "details": {"x": float("nan")}}},
    ],
)
def test_a_malformed_report_is_named_and_reaches_no_event(change: dict[str, object]) -> None:
    assert report_problem({**GOOD_RESULT, **change}) is not None
