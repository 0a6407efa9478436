"""Which items of a loop a retry from it takes over: those that succeeded in its last attempt,
by the parent's record or, for one the loop stopped waiting for, by its own execution."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

from command_side.execution.aggregate import Execution
from command_side.execution.decide import LOOP_RULE
from command_side.execution.service import _items_done


def node(kind: str = "data.transform", **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


def failed_loop() -> Execution:
    """Items 0-2 run together; 0 succeeds, 1 fails (the loop fails at once), 2 was running."""
    execution = Execution(
        execution_id=uuid4(), workflow_id="w1", workflow_version=3,
        nodes={
            "start": node("trigger.manual"),
            "each": node("control.loop", items="{{ [1, 2, 3] }}", concurrency=3),
            "body": node(fields={"x": "{{ inputs.item }}"}),
        },
        edges=[
            {"source": "start", "target": "each"},
            {"source": "each", "target": "body", "label": "body"},
        ],
        start="start", inputs={}, actor_id="u", workspace_id="ws", loop_rule=LOOP_RULE,
    )  # fmt: skip
    execution.admit(0.0, "o")
    records = execution.children["each"]
    execution.child_finished("each", 1, 0, records[0]["child_id"], "SUCCEEDED", 10, None, 1, "o")
    execution.child_finished("each", 1, 1, records[1]["child_id"], "FAILED", None, "no", 2, "o")
    assert execution.status == "FAILED" and records[2]["status"] == "RUNNING"
    return execution


def test_items_that_succeeded_are_taken_over_with_the_loops_items_and_body() -> None:
    original = failed_loop()
    taken = _items_done(original, "each", lambda _: None)
    assert taken == {
        "each": {
            "items": [1, 2, 3],
            "body": {"workflow_id": "w1", "version": 3},
            "done": {"0": {"child_id": original.children["each"][0]["child_id"], "output": 10}},
        }
    }


def test_an_item_that_succeeded_after_its_loop_stopped_waiting_is_taken_over_too() -> None:
    """Its side effects happened: running it again would repeat them."""
    original = failed_loop()
    late = original.children["each"][2]["child_id"]

    def child(execution_id: UUID) -> Any:
        assert str(execution_id) == late
        return SimpleNamespace(status="SUCCEEDED", output=30)

    done = _items_done(original, "each", child)["each"]["done"]
    assert sorted(done) == ["0", "2"] and done["2"]["output"] == 30


def test_an_item_cancelled_or_unknown_runs_again() -> None:
    original = failed_loop()
    cancelled = _items_done(original, "each", lambda _: SimpleNamespace(status="CANCELLED"))
    assert sorted(cancelled["each"]["done"]) == ["0"]


def test_a_step_other_than_a_loop_takes_nothing_over() -> None:
    assert _items_done(failed_loop(), "start", lambda _: None) == {}


def test_a_loop_the_retried_execution_took_over_whole_takes_its_items_from_where_they_ran() -> None:
    """R1 retried the original from a step after the loop (the loop reused whole, no child
    of its own); R2 retries R1 from the loop: the items ran in the original."""
    original = failed_loop()
    retried = Execution(
        execution_id=uuid4(), workflow_id="w1", workflow_version=3,
        nodes=original.graph["nodes"], edges=original.graph["edges"], start="start",
        inputs={}, actor_id="u", workspace_id="ws", loop_rule=LOOP_RULE,
        retry_of=str(original.id), reused={"each": {"output": [10, None, None]}},
    )  # fmt: skip
    loaded = {original.id: original}
    taken = _items_done(retried, "each", lambda i: loaded.get(i))
    assert sorted(taken["each"]["done"]) == ["0"]
    assert _items_done(retried, "each", lambda _: None) == {}  # the original is gone
