"""What the relay sends runners for committed execution events: cancels, dead letters, and
the release of an execution's browser session when it ends."""

from __future__ import annotations

import itertools
from typing import Any

from command_side.execution.dispatch import CONTROL_TOPIC, runner_messages
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
