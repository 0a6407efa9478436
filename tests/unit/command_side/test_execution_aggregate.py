"""The Execution aggregate: decisions become events; runner reports are applied once."""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import reduce
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from command_side.errors import Conflict
from command_side.execution.aggregate import (
    COMPOSE_LIMIT,
    INLINE,
    STEPS_ALL,
    STEPS_UPSTREAM,
    Execution,
    Isolated,
    Pinned,
    StepProblem,
    _nth_free,
    as_json,
)
from command_side.execution.decide import LOOP_RULE
from command_side.workflow.graph_check import check_graph


def node(kind: str = "data.transform", **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


def started(
    nodes: dict[str, dict[str, Any]] | None = None,
    edges: list[tuple[str, str] | tuple[str, str, str]] | None = None,
    conditions: dict[tuple[str, str], str] | None = None,
    **extra: Any,
) -> Execution:
    nodes = nodes or {"start": node("trigger.manual"), "a": node(), "b": node()}
    edges = edges if edges is not None else [("start", "a"), ("a", "b")]
    conditions = conditions or {}
    execution = Execution(
        execution_id=uuid4(),
        workflow_id="w1",
        workflow_version=3,
        nodes=nodes,
        edges=[
            {
                "source": e[0],
                "target": e[1],
                "label": e[2] if len(e) > 2 else None,
                "condition": conditions.get((e[0], e[1])),
            }
            for e in edges
        ],
        start="start",
        inputs={"n": 1},
        actor_id="u1",
        workspace_id="ws1",
        **{"steps_scope": STEPS_UPSTREAM, "loop_rule": LOOP_RULE, **extra},
    )
    return execution


def child_of(spec: Any) -> Execution:
    """The child execution the orchestrator creates for a `ChildSpec`."""
    return Execution(
        execution_id=spec.child_id, workflow_id=spec.workflow_id,
        workflow_version=spec.workflow_version, nodes=spec.nodes, edges=spec.edges,
        start=spec.start, inputs=spec.inputs, actor_id="o", workspace_id="ws1",
        trigger=spec.trigger, parent=spec.parent, outer_steps=spec.outer_steps,
        steps_scope=STEPS_UPSTREAM, inline_steps=list(INLINE), loop_rule=LOOP_RULE,
    )  # fmt: skip


def stored_without(started_event: Any, name: str) -> Execution:
    """`ExecutionStarted` stored, then read back by the library as an event stored before the
    field `name` existed."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    stored = mapper.to_stored_event(started_event)
    state = json.loads(stored.state)
    del state[name]
    older = dataclasses.replace(stored, state=json.dumps(state).encode())
    return mapper.to_domain_event(older).mutate(None)  # type: ignore[attr-defined,no-any-return]


def replayed(events: list[Any]) -> Execution:
    return reduce(lambda aggregate, e: e.mutate(aggregate), events, None)  # type: ignore[arg-type,return-value]


def test_steps_are_scheduled_from_decisions_and_reports_advance_them() -> None:
    execution = started()
    assert execution.status == "QUEUED"
    assert execution.admit(0.0, "orchestrator")
    assert not execution.admit(0.0, "orchestrator")  # admitted once
    assert execution.steps["a"].task is not None
    assert execution.steps["a"].task["config"] == {}
    assert execution.advance(0.0, "orchestrator") == []  # nothing new while a runs
    assert execution.record_success("a", 1, {"x": 1}, None, "runner")
    assert not execution.record_success("a", 1, {"x": 1}, None, "runner")  # a redelivery
    assert not execution.record_success("b", 1, {}, None, "runner")  # never scheduled
    assert [s.node_id for s in execution.advance(1.0, "orchestrator")] == ["b"]
    assert not execution.record_failure("b", 2, "Oops", "stale attempt", "runner")
    assert execution.record_success("b", 1, "done", None, "runner")
    assert execution.advance(2.0, "orchestrator") == []
    assert (execution.status, execution.output) == ("SUCCEEDED", {"b": "done"})
    events = execution.collect_events()
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "ExecutionStarted",
        "ExecutionAdmitted",
        "StepScheduled",
        "StepSucceeded",
        "StepScheduled",
        "StepSucceeded",
        "ExecutionFinished",
    ]
    again = replayed(events)
    assert (again.status, again.steps["b"].output) == ("SUCCEEDED", "done")


def test_configs_are_rendered_from_earlier_outputs() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node(fields={"double": "{{ inputs.n * 2 }}"}),
            "b": node(fields={"from_a": "{{ steps.a.output.double + 1 }}"}),
        }
    )
    execution.admit(0.0, "o")
    assert execution.steps["a"].task["config"] == {"fields": {"double": 2}}
    execution.record_success("a", 1, {"double": 2}, None, "runner")
    execution.advance(1.0, "o")
    assert execution.steps["b"].input == {"fields": {"from_a": 3}}


def test_a_bad_template_fails_the_step_naming_node_and_key() -> None:
    execution = started(
        {"start": node("trigger.manual"), "a": node(fields={"x": "{{ steps.nope.output }}"})},
        [("start", "a")],
    )
    execution.admit(0.0, "o")
    assert execution.status == "FAILED"
    assert execution.error is not None and execution.error.startswith("a: a.fields.x")
    assert execution.steps["a"].error["type"] == "TemplateError"


def test_a_cancelled_execution_takes_no_more_reports_or_decisions() -> None:
    execution = started()
    execution.admit(0.0, "orchestrator")
    execution.cancel("not needed", "u1")
    assert execution.status == "CANCELLED"
    assert not execution.record_success("a", 1, {}, None, "runner")
    assert execution.advance(1.0, "orchestrator") == []
    with pytest.raises(Conflict):
        execution.cancel("again", "u1")


def test_if_runs_in_the_orchestrator_and_skips_the_other_branch() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "check": node("control.if", condition="{{ inputs.n > 0 }}"),
            "yes": node(),
            "no": node(),
            "after_no": node(),
        },
        [
            ("start", "check"),
            ("check", "yes", "true"),
            ("check", "no", "false"),
            ("no", "after_no"),
        ],
    )
    execution.admit(0.0, "o")
    assert execution.steps["check"].branch == "true"
    assert execution.steps["after_no"].status == "skipped"
    assert execution.steps["yes"].status == "scheduled"
    execution.record_success("yes", 1, {}, None, "runner")
    execution.advance(2.0, "o")
    assert execution.status == "SUCCEEDED"


def test_retries_wait_their_backoff_then_dispatch() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node("http.request", url="http://x", retry={"max_attempts": 2}),
        },
        [("start", "a")],
    )
    execution.admit(0.0, "o")
    execution.record_failure("a", 1, "HttpStatusError", "503", "runner")
    execution.advance(10.0, "o")
    waiting = execution.steps["a"]
    assert (waiting.status, waiting.attempt, waiting.started) == ("scheduled", 2, False)
    assert waiting.not_before == 11.0
    assert execution.next_wake(30.0, {}) == 11.0
    assert execution.wake(10.5, "o") == []
    assert [s.node_id for s in execution.wake(11.0, "o")] == ["a"]
    assert execution.steps["a"].task["attempt"] == 2
    execution.record_failure("a", 2, "HttpStatusError", "503 again", "runner")
    execution.advance(12.0, "o")
    assert execution.status == "FAILED"
    failed = [e for e in execution.collect_events() if type(e).__name__ == "StepFailed"]
    assert [e.final for e in failed] == [False, True]
    assert failed[-1].dead_letter["task"]["attempt"] == 2


def test_a_failure_keeps_what_it_left_to_look_at_and_older_events_read_without() -> None:
    execution = started({"start": node("trigger.manual"), "a": node("http.request", url="x")})
    execution.admit(0.0, "o")
    shot = {"$artifact": {"sha256": "ab" * 32, "size": 10, "media_type": "image/png"}}
    details = {"url": "http://site/form", "screenshot": shot}
    execution.record_failure(
        "a", 1, "TimeoutError", "no #go", "runner", retryable=False, details=details
    )
    assert execution.steps["a"].error["details"] == details
    events = execution.collect_events()
    assert replayed(events).steps["a"].error["details"] == details
    failed = events[-1]
    del failed.__dict__["details"]  # as stored before StepFailed had details
    assert "details" not in replayed(events).steps["a"].error


def test_a_lapsed_heartbeat_gives_the_step_a_new_attempt_without_charging_it() -> None:
    execution = started({"start": node("trigger.manual"), "a": node()}, [("start", "a")])
    execution.admit(0.0, "o")
    execution.overdue(5.0, 10.0, {"a:1": 4.0})  # heard at 4: fine
    assert execution.steps["a"].attempt == 1
    execution.overdue(14.5, 10.0, {"a:1": 4.0})
    execution.advance(14.5, "o")
    assert (execution.steps["a"].status, execution.steps["a"].attempt) == ("scheduled", 2)
    assert not execution.record_success("a", 1, "late", None, "runner")  # superseded
    assert execution.record_success("a", 2, "ok", None, "runner")
    execution.advance(15.0, "o")
    assert execution.status == "SUCCEEDED"


def test_a_runner_killed_near_a_short_deadline_costs_no_attempt() -> None:
    """A runner took the step (heard at 4) and died; its 5 s deadline passes before its
    heartbeat lapses (10 s). That is a lost runner, not a slow step: an uncharged attempt
    once the lapse shows it, not a charged StepTimeout at the deadline."""
    execution = started({"start": node("trigger.manual"), "a": node(timeout_s=5)}, [("start", "a")])
    execution.admit(0.0, "o")
    heard = {"a:1": 0.1}
    # Nothing to do at the deadline itself (no look then, again and again): the lapse next.
    assert execution.next_wake(10.0, heard) == 10.1
    execution.overdue(5.0, 10.0, heard)  # its runner says so itself if it lives
    assert execution.steps["a"].status == "scheduled" and not execution.steps["a"].error
    assert execution.next_wake(10.0, heard) == 10.1
    execution.overdue(10.1, 10.0, heard)
    assert execution.steps["a"].error["type"] == "HeartbeatTimeout"
    execution.advance(10.1, "o")
    assert (execution.steps["a"].status, execution.steps["a"].attempt) == ("scheduled", 2)
    assert execution.steps["a"].used == 1  # the lost attempt was not charged


def test_a_step_past_its_deadline_whose_runner_lives_but_says_nothing_times_out() -> None:
    execution = started({"start": node("trigger.manual"), "a": node(timeout_s=5)}, [("start", "a")])
    execution.admit(0.0, "o")
    execution.overdue(14.0, 10.0, {"a:1": 13.0})  # heart-beating, deadline + 9 s
    assert not execution.steps["a"].error
    assert execution.next_wake(10.0, {"a:1": 13.0}) == 15.0  # a heartbeat past the deadline
    execution.overdue(15.0, 10.0, {"a:1": 14.5})
    assert execution.steps["a"].error["type"] == "StepTimeout"


def test_an_orchestrator_that_took_over_waits_a_heartbeat_timeout_before_calling_a_step_lost() -> (
    None
):
    """A long step its runner heart-beats for: the orchestrator that took the execution over
    at 200 never heard of it (the heartbeats went to the one before). Lost only if nothing is
    heard for a heartbeat timeout of its own watching, not at once."""
    execution = started({"start": node("trigger.manual"), "a": node()}, [("start", "a")])
    execution.admit(0.0, "o")
    assert execution.next_wake(10.0, {}, 120.0, watched_since=200.0) == 210.0
    execution.overdue(201.0, 10.0, {}, 120.0, watched_since=200.0)
    assert not execution.steps["a"].error
    # Nor by a heartbeat it heard when it had the execution before (and lost it meanwhile).
    execution.overdue(201.0, 10.0, {"a:1": 50.0}, 120.0, watched_since=200.0)
    assert not execution.steps["a"].error
    execution.overdue(205.0, 10.0, {"a:1": 204.0}, 120.0, watched_since=200.0)  # heard
    execution.overdue(213.0, 10.0, {"a:1": 204.0}, 120.0, watched_since=200.0)
    assert not execution.steps["a"].error
    execution.overdue(214.0, 10.0, {"a:1": 204.0}, 120.0, watched_since=200.0)
    assert execution.steps["a"].error["type"] == "HeartbeatTimeout"


def test_a_task_found_still_waiting_in_its_topic_gets_a_queue_timeout_from_then() -> None:
    """Behind busy runners a task may wait longer than a queue timeout: found still waiting
    (no runner took it), it is not lost, and the next look is a queue timeout later."""
    execution = started({"start": node("trigger.manual"), "a": node()}, [("start", "a")])
    execution.admit(0.0, "o")
    assert execution.next_wake(10.0, {}, 120.0) == 120.0
    execution.overdue(120.0, 10.0, {}, 120.0, queued={"a:1": 120.0})
    assert execution.steps["a"].status == "scheduled" and not execution.steps["a"].error
    assert execution.next_wake(10.0, {}, 120.0, queued={"a:1": 120.0}) == 240.0
    # Another attempt's finding says nothing of this one.
    execution.overdue(240.0, 10.0, {}, 120.0, queued={"a:2": 239.0})
    assert execution.steps["a"].error["type"] == "HeartbeatTimeout"


def test_a_task_larger_than_a_kafka_message_fails_its_step_at_once() -> None:
    """Each value is within the template bound; together they make a task no broker takes.
    Before, every send was refused and the step went round its attempts for minutes."""
    body = {k: "{{ inputs.text }}" for k in "abcd"}
    execution = started(
        {"start": node("trigger.manual"), "a": node("http.request", url="http://x", body=body)},
        [("start", "a")],
    )
    execution.inputs = {"text": "x" * 240_000}
    execution.admit(0.0, "o")
    error = execution.steps["a"].error
    assert error["type"] == "ConfigError" and "one Kafka message" in error["message"]
    assert execution.steps["a"].task is None


def test_a_poison_task_that_kills_every_runner_fails_in_the_end() -> None:
    execution = started({"start": node("trigger.manual"), "a": node()}, [("start", "a")])
    execution.admit(0.0, "o")
    now = 0.0
    while execution.status == "RUNNING":
        now += 100
        execution.overdue(now, 10.0, {})
        execution.advance(now, "o")
    assert execution.status == "FAILED"
    assert execution.steps["a"].attempt == 4


def test_step_and_execution_deadlines() -> None:
    execution = started({"start": node("trigger.manual"), "a": node(timeout_s=5)}, [("start", "a")])
    execution.admit(0.0, "o")
    execution.overdue(5.0, 100.0, {})
    execution.advance(5.0, "o")
    assert execution.status == "TIMED_OUT"
    limited = started(timeout_s=3.0)
    limited.admit(0.0, "o")
    assert limited.steps["a"].task["timeout_s"] == 3.0
    limited.overdue(3.0, 100.0, {})
    assert limited.status == "TIMED_OUT"


def test_delay_waits_on_the_orchestrators_clock() -> None:
    execution = started(
        {"start": node("trigger.manual"), "wait": node("control.delay", seconds=30), "b": node()},
        [("start", "wait"), ("wait", "b")],
    )
    execution.admit(100.0, "o")
    assert execution.next_wake(1000.0, {}) == 130.0
    assert execution.wake(129.0, "o") == []
    assert [s.node_id for s in execution.wake(130.0, "o")] == ["b"]


@pytest.mark.parametrize(
    "until",
    [
        1000,
        1000.0,
        "1000",
        " 1000.0 ",
        "1970-01-01T00:16:40+00:00",
        "1970-01-01T00:16:40",  # no zone: UTC
        "1970-01-01T01:16:40+01:00",
        "{{ 500 * 2 }}",
    ],
)
def test_a_delay_waits_until_epoch_seconds_or_an_iso_time(until: object) -> None:
    execution = started(
        {"start": node("trigger.manual"), "wait": node("control.delay", until=until), "b": node()},
        [("start", "wait"), ("wait", "b")],
    )
    execution.admit(100.0, "o")
    assert execution.next_wake(5000.0, {}) == 1000.0
    assert [s.node_id for s in execution.wake(1000.0, "o")] == ["b"]


@pytest.mark.parametrize(
    "until",
    ["soon", "nan", "inf", "1e999", "1e13", "-5", "{{ true }}", "{{ 10 ** 20 }}", "{{ 1e300 }}"],
)
def test_a_delay_until_what_is_no_time_fails_its_step(until: str) -> None:
    execution = started(
        {"start": node("trigger.manual"), "wait": node("control.delay", until=until)},
        [("start", "wait")],
    )
    execution.admit(100.0, "o")
    assert execution.status == "FAILED"
    assert execution.steps["wait"].error["type"] == "ConfigError"


def test_a_loop_runs_its_body_as_child_executions_a_few_at_a_time() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "each": node("control.loop", items="{{ [1, 2, 3] }}", concurrency=2),
            "body": node(fields={"x": "{{ inputs.item }}"}),
            "after": node(),
        },
        [("start", "each"), ("each", "body"), ("body", "each"), ("each", "after")],
    )
    execution.admit(0.0, "o")
    first = execution.new_children
    assert [c.inputs for c in first] == [{"item": 1, "index": 0}, {"item": 2, "index": 1}]
    assert set(first[0].nodes) == {"item", "body"}
    execution.new_children = []
    record = execution.children["each"]
    assert execution.child_finished(
        "each", 1, 0, record[0]["child_id"], "SUCCEEDED", {"body": 1}, None, 1.0, "o"
    )
    assert [c.inputs["index"] for c in execution.new_children] == [2]
    for index in (1, 2):
        execution.child_finished(
            "each", 1, index, record[index]["child_id"], "SUCCEEDED", {"body": index + 1},
            None, 2.0, "o",
        )  # fmt: skip
    assert execution.steps["each"].output == [{"body": 1}, {"body": 2}, {"body": 3}]
    assert execution.steps["after"].status == "scheduled"
    again = replayed(execution.collect_events())
    assert again.steps["each"].output == execution.steps["each"].output


LOOP_OF_FOUR = {
    "start": node("trigger.manual"),
    "each": node("control.loop", items="{{ [1, 2, 3, 4] }}", concurrency=1),
    "body": node(fields={"x": "{{ inputs.item }}"}),
    "after": node(),
}
#: The loop's own body, as `started` pins it (its workflow's id and version).
BODY = {"workflow_id": "w1", "version": 3}
LOOP_EDGES: list[tuple[str, str] | tuple[str, str, str]] = [
    ("start", "each"), ("each", "body"), ("body", "each"), ("each", "after"),
]  # fmt: skip


def test_a_retry_from_a_loop_runs_only_the_items_that_did_not_succeed_before() -> None:
    """Items 1 and 3 succeeded in the execution retried (their side effects happened): the
    retry takes their outputs and starts children for items 0 and 2 only, in order."""
    done = {
        "1": {"child_id": "c1", "output": {"x": 2}},
        "3": {"child_id": "c3", "output": {"x": 4}},
    }
    execution = started(
        LOOP_OF_FOUR, LOOP_EDGES, retry_of="old",
        reused_items={"each": {"items": [1, 2, 3, 4], "body": BODY, "done": done}},
    )  # fmt: skip
    execution.admit(0.0, "o")
    assert [c.inputs for c in execution.new_children] == [{"item": 1, "index": 0}]
    execution.new_children = []
    record = execution.children["each"]
    assert record[1]["status"] == record[3]["status"] == "SUCCEEDED"
    assert record[1]["reused_from"] == "old"
    execution.child_finished(
        "each", 1, 0, record[0]["child_id"], "SUCCEEDED", {"x": 1}, None, 1.0, "o"
    )
    assert [c.inputs for c in execution.new_children] == [{"item": 3, "index": 2}]
    execution.child_finished(
        "each", 1, 2, record[2]["child_id"], "SUCCEEDED", {"x": 3}, None, 2.0, "o"
    )
    assert execution.steps["each"].output == [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]
    assert execution.steps["after"].status == "scheduled"
    again = replayed(execution.collect_events())
    assert again.steps["each"].output == execution.steps["each"].output
    assert again.items_reused == {"each": [1, 3]}


def test_a_retry_from_a_loop_whose_items_all_succeeded_before_starts_no_child() -> None:
    done = {str(i): {"child_id": f"c{i}", "output": i} for i in range(4)}
    execution = started(
        LOOP_OF_FOUR, LOOP_EDGES, retry_of="old",
        reused_items={"each": {"items": [1, 2, 3, 4], "body": BODY, "done": done}},
    )  # fmt: skip
    execution.admit(0.0, "o")
    assert execution.new_children == []
    assert execution.steps["each"].output == [0, 1, 2, 3]
    assert execution.steps["after"].status == "scheduled"


def test_a_retry_from_a_loop_whose_items_changed_runs_every_item() -> None:
    """The outputs recorded belong to the items they came from: other items, no reuse."""
    done = {"0": {"child_id": "c0", "output": 0}}
    execution = started(
        LOOP_OF_FOUR, LOOP_EDGES, retry_of="old",
        reused_items={"each": {"items": [9, 2, 3, 4], "body": BODY, "done": done}},
    )  # fmt: skip
    execution.admit(0.0, "o")
    assert [c.inputs["index"] for c in execution.new_children] == [0]
    assert execution.items_reused == {"each": []}


def test_a_retry_from_a_loop_whose_body_is_another_version_now_runs_every_item() -> None:
    """A `body_workflow_id` runs its latest published version: outputs of the version the
    retried execution ran would not mix with those of the one it runs now."""
    done = {"0": {"child_id": "c0", "output": 0}}
    execution = started(
        LOOP_OF_FOUR, LOOP_EDGES, retry_of="old",
        reused_items={"each": {"items": [1, 2, 3, 4], "body": {**BODY, "version": 2},
                               "done": done}},
    )  # fmt: skip
    execution.admit(0.0, "o")
    assert [c.inputs["index"] for c in execution.new_children] == [0]


def test_a_retried_loop_keeps_its_items_across_its_own_attempts_and_replays_the_same() -> None:
    """The loop fails again in the retry and its `retry` policy runs it again after a
    backoff: the items taken over stay taken over; the ones this execution ran run again.
    Replay reads the restart as the timer's doing and finds every decision the same."""
    from command_side.execution.service import replay_events

    nodes = {
        **LOOP_OF_FOUR,
        "each": node(
            "control.loop", items="{{ [1, 2, 3, 4] }}", concurrency=1,
            retry={"max_attempts": 2, "initial_interval_s": 1},
        ),
    }  # fmt: skip
    done = {"1": {"child_id": "c1", "output": 2}, "3": {"child_id": "c3", "output": 4}}
    execution = started(
        nodes, LOOP_EDGES, retry_of="old",
        reused_items={"each": {"items": [1, 2, 3, 4], "body": BODY, "done": done}},
    )  # fmt: skip
    execution.admit(0.0, "o")
    first = execution.children["each"][0]["child_id"]
    execution.child_finished("each", 1, 0, first, "FAILED", None, "boom", 1.0, "o")
    assert execution.steps["each"].status == "scheduled"  # attempt 2 waits its backoff
    execution.new_children = []
    execution.wake(2.5, "o")
    assert execution.items_reused["each"] == [1, 3]
    assert [c.inputs["index"] for c in execution.new_children] == [0]
    for index, output in ((0, 1), (2, 3)):
        record = execution.children["each"][index]
        execution.child_finished(
            "each", 2, index, record["child_id"], "SUCCEEDED", output, None, 3.0 + index, "o"
        )
    assert execution.steps["each"].output == [1, 2, 3, 4]
    events = execution.collect_events()
    assert replay_events(events, "e", execution.status).deterministic


def test_an_execution_started_before_reused_items_existed_reuses_no_item() -> None:
    recorded = stored_without(started(LOOP_OF_FOUR, LOOP_EDGES).collect_events()[0], "reused_items")
    assert recorded.reused_items == {}
    recorded.admit(0.0, "o")
    assert [c.inputs["index"] for c in recorded.new_children] == [0]


@given(
    st.sets(st.integers(min_value=0, max_value=40)).map(sorted),
    st.integers(min_value=0, max_value=40),
)
def test_the_nth_item_to_start_skips_exactly_the_items_taken_over(taken: list[int], n: int) -> None:
    free = [i for i in range(100) if i not in taken]
    assert _nth_free(n, taken) == free[n]


class WithWorkflow(Isolated):
    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        if workflow_id != "child":
            raise StepProblem("WorkflowNotFound", f"no workflow {workflow_id}")
        return Pinned("child", 2, {"t": node("trigger.manual")}, [], "t")


def test_a_subworkflow_waits_for_its_child_and_a_missing_one_fails_the_step() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "sub": node("control.subworkflow", workflow_id="child", inputs={"a": 1}),
        },
        [("start", "sub")],
    )
    execution.admit(0.0, "o", WithWorkflow())
    (child,) = execution.new_children
    assert (child.workflow_id, child.workflow_version, child.inputs) == ("child", 2, {"a": 1})
    assert not execution.child_finished("sub", 1, None, "other", "SUCCEEDED", {}, None, 1, "o")
    execution.child_finished(
        "sub", 1, None, str(child.child_id), "SUCCEEDED", {"r": 1}, None, 1, "o"
    )
    assert (execution.status, execution.output) == ("SUCCEEDED", {"sub": {"r": 1}})
    missing = started(
        {"start": node("trigger.manual"), "sub": node("control.subworkflow", workflow_id="x")},
        [("start", "sub")],
    )
    missing.admit(0.0, "o", WithWorkflow())
    assert missing.status == "FAILED" and "no workflow x" in (missing.error or "")


def test_a_subworkflow_or_loop_step_past_its_timeout_fails_and_stops_its_children() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "sub": node("control.subworkflow", workflow_id="child", timeout_s=30),
            "each": node("control.loop", items="{{ [1, 2] }}", concurrency=2),
            "body": node(fields={"x": "{{ inputs.item }}"}),
        },
        [("start", "sub"), ("start", "each"), ("each", "body"), ("body", "each")],
    )
    execution.admit(100.0, "o", WithWorkflow())
    assert len(execution.new_children) == 3
    # Only the step with a timeout has a deadline; the loop without one waits as long as
    # its children take.
    assert execution.next_wake(60, {}) == 130.0
    execution.overdue(129.0, 60, {})
    assert execution.steps["sub"].status == "scheduled" and not execution.children_to_cancel
    execution.overdue(130.0, 60, {})
    sub = execution.steps["sub"]
    assert sub.status == "failed" and sub.error is not None
    assert (sub.error["type"], sub.error["message"]) == ("StepTimeout", "sub ran longer than 30 s")
    assert execution.children_to_cancel == [execution.children["sub"][None]["child_id"]]
    execution.advance(130.0, "o")
    assert execution.status == "TIMED_OUT"
    again = replayed(execution.collect_events())
    assert again.steps["sub"].status == "failed" and again.status == "TIMED_OUT"


def test_a_retry_reuses_recorded_outputs() -> None:
    execution = started(reused={"a": {"output": {"x": 1}, "branch": None}}, retry_of="e0")
    execution.admit(0.0, "o")
    assert execution.steps["a"].status == "succeeded"
    assert execution.steps["b"].status == "scheduled"
    kinds = [type(e).__name__ for e in execution.collect_events()]
    assert "StepReused" in kinds


def test_a_missing_credential_fails_the_step_without_retrying() -> None:
    execution = started(
        {"start": node("trigger.manual"), "q": node("sql.query", credential="db", query="x")},
        [("start", "q")],
    )
    execution.admit(0.0, "o")
    assert execution.status == "FAILED"
    assert execution.steps["q"].error["type"] == "CredentialNotFound"


def test_replay_reports_a_record_that_does_not_follow_the_rules() -> None:
    from command_side.execution.service import replay_events

    execution = started(
        {
            "start": node("trigger.manual"),
            "check": node("control.if", condition="{{ inputs.n > 0 }}"),
            "yes": node(),
            "no": node(),
        },
        [("start", "check"), ("check", "yes", "true"), ("check", "no", "false")],
    )
    execution.admit(0.0, "o")
    execution.record_success("yes", 1, {"ok": 1}, None, "runner")
    execution.advance(1.0, "o")
    events = execution.collect_events()
    assert replay_events(events, "e", "SUCCEEDED").deterministic

    def tampered(kind: str, node_id: str, **changes: Any) -> list[Any]:
        out = []
        for e in events:
            if type(e).__name__ == kind and e.node_id == node_id:
                e = copy.copy(e)
                for name, value in changes.items():
                    object.__setattr__(e, name, value)
            out.append(e)
        return out

    report = replay_events(tampered("StepSucceeded", "check", branch="false"), "e", "FAILED")
    assert not report.deterministic and report.divergences[0].node_id == "check"
    report = replay_events(tampered("StepScheduled", "yes", input={"x": 1}), "e", "FAILED")
    assert not report.deterministic and report.divergences[0].node_id == "yes"


def conditional(conditions: dict[tuple[str, str], str]) -> Execution:
    """start → a, then a → hot / a → cold / a → always (conditions on some edges)."""
    nodes = {
        "start": node("trigger.manual"),
        "a": node(),
        "hot": node(),
        "cold": node(),
        "always": node(),
    }
    edges = [("start", "a"), ("a", "hot"), ("a", "cold"), ("a", "always")]
    execution = Execution(
        execution_id=uuid4(), workflow_id="w1", workflow_version=1, nodes=nodes,
        edges=[
            {"source": s, "target": t, "label": None, "condition": conditions.get((s, t))}
            for s, t in edges
        ],
        start="start", inputs={"limit": 10}, actor_id="u1", workspace_id="ws1",
        vars={"unit": "C"},
    )  # fmt: skip
    execution.admit(0.0, "o")
    return execution


def test_an_edge_is_taken_only_when_its_condition_holds_for_the_output() -> None:
    execution = conditional(
        {
            ("a", "hot"): "{{ output.t > inputs.limit and vars.unit == 'C' }}",
            ("a", "cold"): "{{ output.t <= inputs.limit }}",
        }
    )
    execution.record_success("a", 1, {"t": 25}, None, "runner")
    scheduled = {s.node_id for s in execution.advance(1.0, "o")}
    assert scheduled == {"hot", "always"}
    assert execution.steps["cold"].status == "skipped"
    assert execution.steps["a"].blocked == ("cold",)
    events = execution.collect_events()
    routed = [e for e in events if type(e).__name__ == "EdgesRouted"]
    assert [(e.node_id, e.blocked, e.error) for e in routed] == [("a", ["cold"], None)]
    again = replayed(events)  # the verdicts are recorded: reloading does not evaluate again
    assert again.steps["a"].blocked == ("cold",) and again.steps["cold"].status == "skipped"


def test_a_condition_that_cannot_be_evaluated_fails_the_execution_naming_the_edge() -> None:
    execution = conditional({("a", "hot"): "{{ output.missing.deeper > 1 }}"})
    execution.record_success("a", 1, {"t": 25}, None, "runner")
    assert execution.advance(1.0, "o") == []
    assert execution.status == "FAILED"
    assert execution.error is not None
    assert execution.error.startswith("a: the condition of edge a → hot:"), execution.error


def test_edges_without_conditions_are_routed_as_before() -> None:
    execution = conditional({})
    execution.record_success("a", 1, {"t": 25}, None, "runner")
    assert {s.node_id for s in execution.advance(1.0, "o")} == {"hot", "cold", "always"}
    kinds = [type(e).__name__ for e in execution.collect_events()]
    assert "EdgesRouted" not in kinds


def test_a_retry_keeps_the_routes_its_reused_steps_chose() -> None:
    """Evaluated again in the retry, `execution.trigger.kind` would now say retry."""
    nodes = {"start": node("trigger.manual"), "a": node(), "b": node(), "c": node(), "d": node()}
    when = "{{ execution.trigger.kind == 'manual' }}"
    unless = "{{ execution.trigger.kind != 'manual' }}"
    edges = [
        {"source": "start", "target": "a", "label": None, "condition": None},
        {"source": "a", "target": "b", "label": None, "condition": when},
        {"source": "a", "target": "c", "label": None, "condition": unless},
        {"source": "b", "target": "d", "label": None, "condition": None},
    ]
    retry = Execution(
        execution_id=uuid4(), workflow_id="w1", workflow_version=1, nodes=nodes, edges=edges,
        start="start", inputs={}, actor_id="u1", workspace_id="ws1",
        trigger={"kind": "retry"}, retry_of="e0",
        reused={
            "start": {"blocked": []},
            "a": {"output": {"x": 1}, "branch": None, "blocked": ["c"]},
        },
    )  # fmt: skip
    retry.admit(0.0, "o")
    assert retry.steps["a"].blocked == ("c",)
    assert retry.steps["c"].status == "skipped"
    assert retry.steps["b"].status == "scheduled"
    assert "EdgesRouted" not in [type(e).__name__ for e in retry.collect_events()]


def test_a_step_sees_only_the_steps_upstream_of_it_whatever_finished_first() -> None:
    # start → a → c and start → b: b runs beside a, so c cannot count on it.
    nodes = {
        "start": node("trigger.manual"),
        "a": node(),
        "b": node(),
        "c": node(fields={"a": "{{ steps.a.output }}", "seen": "{{ steps | sort | join(',') }}"}),
    }
    edges = [("start", "a"), ("start", "b"), ("a", "c")]
    for b_first in (True, False):
        execution = started(nodes, edges)
        execution.admit(0.0, "o")
        order = [("b", "from b"), ("a", "from a")] if b_first else [("a", "from a")]
        for node_id, output in order:
            execution.record_success(node_id, 1, output, None, "runner")
            execution.advance(1.0, "o")
        assert execution.steps["c"].input == {"fields": {"a": "from a", "seen": "a,start"}}
    reading_b = dict(nodes, c=node(fields={"b": "{{ steps.b.output }}"}))
    execution = started(reading_b, edges)
    execution.admit(0.0, "o")
    execution.record_success("b", 1, "from b", None, "runner")
    execution.record_success("a", 1, "from a", None, "runner")
    execution.advance(1.0, "o")
    assert execution.steps["c"].error["type"] == "TemplateError"  # every time, not by luck


def test_a_condition_sees_its_source_and_what_is_upstream_of_it() -> None:
    nodes = {
        "start": node("trigger.manual"),
        "a": node(),
        "side": node(),
        "next": node(),
    }
    execution = started(
        nodes,
        [("start", "a"), ("start", "side"), ("a", "next")],
        {("a", "next"): "{{ steps.a.output == output and 'side' not in steps }}"},
    )
    execution.admit(0.0, "o")
    execution.record_success("side", 1, "done first", None, "runner")
    execution.record_success("a", 1, 7, None, "runner")
    execution.advance(1.0, "o")
    assert execution.steps["a"].blocked == ()
    assert execution.steps["next"].status == "scheduled"


def test_a_loop_body_sees_what_its_loop_step_sees() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "before": node(),
            "beside": node(),
            "each": node("control.loop", items="{{ [1, 2] }}", concurrency=1),
            "body": node(fields={"x": "{{ steps.before.output }}"}),
        },
        [("start", "before"), ("start", "beside"), ("before", "each"), ("each", "body"),
         ("body", "each")],
    )  # fmt: skip
    execution.admit(0.0, "o")
    execution.record_success("before", 1, "b4", None, "runner")
    execution.advance(1.0, "o")
    first = execution.new_children
    execution.new_children = []
    record = execution.children["each"]
    execution.record_success("beside", 1, "late", None, "runner")  # while item 0 runs
    execution.child_finished(
        "each", 1, 0, record[0]["child_id"], "SUCCEEDED", {"body": 1}, None, 2.0, "o"
    )
    second = execution.new_children
    assert [set(c.outer_steps) for c in first + second] == [{"start", "before"}] * 2


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_what_the_graph_check_accepts_is_what_every_run_sees(data: st.DataObject) -> None:
    """Whatever order parallel steps finish in, a run succeeds exactly when validateWorkflow
    finds no template reading a step that is not upstream, and then each step saw every step
    it read."""
    names = [f"n{i}" for i in range(data.draw(st.integers(2, 6)))]
    edges = {
        (a, b)
        for a, b in data.draw(st.sets(st.tuples(st.sampled_from(names), st.sampled_from(names))))
        if a < b  # a DAG
    }
    edges |= {("start", n) for n in names if not any(t == n for _, t in edges)}
    reads = {n: data.draw(st.sets(st.sampled_from(names))) - {n} for n in names}
    nodes = {"start": node("trigger.manual")} | {
        n: node(fields={r: f"{{{{ steps.{r}.output }}}}" for r in sorted(reads[n])}) for n in names
    }
    accepted = not check_graph(nodes, sorted(edges))
    execution = started(nodes, sorted(edges))
    execution.admit(0.0, "o")
    now = 1.0
    while not execution.finished:
        running = sorted(n for n, s in execution.steps.items() if s.status == "scheduled")
        done = data.draw(st.sampled_from(running[::-1]))  # any of them may finish first
        execution.record_success(done, 1, f"out of {done}", None, "runner")
        execution.advance(now, "o")
        now += 1
    assert (execution.status == "SUCCEEDED") == accepted, execution.error
    if accepted:
        for n in names:
            assert execution.steps[n].input == {"fields": {r: f"out of {r}" for r in reads[n]}}


def test_executions_recorded_before_the_upstream_rule_keep_seeing_every_step() -> None:
    """Their events carry no scope: they run on, and replay, as they were recorded."""
    nodes = {
        "start": node("trigger.manual"),
        "a": node(),
        "b": node(),
        "c": node(fields={"b": "{{ steps.b.output }}"}),
    }
    execution = started(nodes, [("start", "a"), ("start", "b"), ("a", "c")], steps_scope=STEPS_ALL)
    execution.admit(0.0, "o")
    execution.record_success("b", 1, "from b", None, "runner")
    execution.record_success("a", 1, "from a", None, "runner")
    execution.advance(1.0, "o")
    assert execution.steps["c"].input == {"fields": {"b": "from b"}}
    again = stored_without(execution.collect_events()[0], "steps_scope")
    assert again.steps_scope == STEPS_ALL
    assert started(nodes, [("start", "a")]).steps_scope == STEPS_UPSTREAM


def test_the_handler_behind_an_error_edge_reads_the_error_it_handles() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "charge": node(),
            "apologise": node(fields={"why": "{{ steps.charge.error.message }}"}),
        },
        [("start", "charge"), ("charge", "apologise", "error")],
    )
    execution.admit(0.0, "o")
    execution.record_failure("charge", 1, "CardDeclined", "card declined", "runner")
    execution.advance(1.0, "o")
    assert execution.steps["apologise"].input == {"fields": {"why": "card declined"}}


class Kept(Isolated):
    """Keeps outputs over 20 bytes of JSON in a dict standing for the artifact store."""

    def __init__(self) -> None:
        self.blobs: dict[str, Any] = {}

    def keep(self, workspace_id: str, value: Any) -> Any:
        if len(json.dumps(value, separators=(",", ":"))) <= 20:
            return super().keep(workspace_id, value)
        key = f"blob{len(self.blobs)}"
        self.blobs[key] = value
        return {"$artifact": {"sha256": key}}

    def resolve(self, workspace_id: str, value: Any) -> Any:
        if isinstance(value, dict) and "$artifact" in value:
            return self.blobs[value["$artifact"]["sha256"]]
        return value


def chain(**extra: Any) -> Execution:
    return started(
        {
            "start": node("trigger.manual"),
            "a": node(fields={"double": "{{ inputs.n * 2 }}"}),
            "b": node(fields={"text": "{{ steps.a.output.double }} times, " + "x" * 30}),
        },
        **extra,
    )


def test_transforms_complete_in_the_orchestrator_when_the_execution_records_so() -> None:
    """The rendered config is the whole of a transform: no task, no runner, one decision."""
    env = Kept()
    execution = chain(inline_steps=list(INLINE))
    assert execution.admit(0.0, "o", env) is True
    assert execution.status == "SUCCEEDED"
    assert execution.steps["a"].output == {"double": 2}
    assert execution.steps["a"].task is None
    # Over the (here: 20-byte) limit, the output goes to the artifact store, as a runner's.
    assert execution.steps["b"].output == {"$artifact": {"sha256": "blob0"}}
    assert env.blobs["blob0"] == {"text": "2 times, " + "x" * 30}
    events = execution.collect_events()
    kinds = [type(e).__name__ for e in events]
    # One event per step: its StepSucceeded says what a StepScheduled would have.
    assert kinds == [
        "ExecutionStarted",
        "ExecutionAdmitted",
        "StepSucceeded",
        "StepSucceeded",
        "ExecutionFinished",
    ]
    done = [e for e in events if type(e).__name__ == "StepSucceeded"]
    assert [(e.node_type, e.input, e.runner_id) for e in done] == [
        ("data.transform", {"fields": {"double": 2}}, None),
        ("data.transform", {"fields": {"text": "2 times, " + "x" * 30}}, None),
    ]
    again = replayed(events)
    assert (again.status, again.steps["b"].output) == ("SUCCEEDED", execution.steps["b"].output)
    assert again.steps["a"].input == {"fields": {"double": 2}} and again.steps["a"].used == 1
    assert again.inline_steps == frozenset(INLINE)


def test_replay_compares_a_transforms_output_kept_in_the_artifact_store_by_content() -> None:
    from command_side.execution.service import replay_events

    env = Kept()
    execution = chain(inline_steps=list(INLINE))
    execution.admit(0.0, "o", env)
    events = execution.collect_events()

    def resolve(workspace_id: str, value: Any) -> Any:
        return env.resolve(workspace_id, value)

    assert replay_events(events, "e", "SUCCEEDED", resolve).deterministic
    # The steps are decisions, not reports: what they recorded is derived again and compared.
    for change in ({"output": {"double": 3}}, {"input": {"fields": {"double": 3}}}):
        tampered = [
            dataclasses.replace(e, **change)  # type: ignore[type-var]
            if type(e).__name__ == "StepSucceeded" and e.node_id == "a"
            else e
            for e in events
        ]
        report = replay_events(tampered, "e", "SUCCEEDED", resolve)
        assert not report.deterministic and report.divergences[0].node_id == "a", change
    env.blobs["blob0"] = {"text": "tampered"}
    report = replay_events(events, "e", "SUCCEEDED", resolve)
    assert not report.deterministic and report.divergences[0].node_id == "b"


def test_an_output_that_cannot_be_kept_fails_the_transform_where_it_ran() -> None:
    class Full(Isolated):
        def keep(self, workspace_id: str, value: Any) -> Any:
            raise StepProblem("ArtifactError", "the store is full", retryable=True)

    execution = started(
        {"start": node("trigger.manual"), "a": node(fields={"x": "{{ inputs.n }}"})},
        [("start", "a")],
        inline_steps=list(INLINE),
    )
    execution.admit(0.0, "o", Full())
    step = execution.steps["a"]
    assert step.error is not None and step.error["type"] == "ArtifactError"
    assert step.task is None
    # Templates render only JSON values; the check stands for whatever else a step returns.
    for bad in (float("nan"), {1, 2}):
        with pytest.raises(StepProblem) as caught:
            as_json({"x": bad})
        assert caught.value.error_type == "OutputError"


def test_a_transform_after_a_runner_step_completes_when_the_report_arrives() -> None:
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node("http.request", url="http://x"),
            "b": node(fields={"after": "{{ steps.a.output }}"}),
        },
        [("start", "a"), ("a", "b")],
        inline_steps=list(INLINE),
    )
    execution.admit(0.0, "o")
    execution.record_success("a", 1, "got", None, "runner")
    assert execution.advance(1.0, "o") == []
    assert (execution.status, execution.steps["b"].output) == ("SUCCEEDED", {"after": "got"})


def test_a_transform_retried_after_its_backoff_completes_when_it_wakes() -> None:
    """A retry that waits out its backoff (StepScheduled, not started) completes in place
    when its timer fires."""

    class FailsOnce(Isolated):
        failed = False

        def keep(self, workspace_id: str, value: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise StepProblem("ArtifactError", "the store is busy", retryable=True)
            return value

    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node(fields={"n": "{{ inputs.n }}"}, retry={"max_attempts": 3}),
        },
        [("start", "a")],
        inline_steps=list(INLINE),
    )
    env = FailsOnce()
    execution.admit(0.0, "o", env)  # attempt 1 fails; attempt 2 waits its backoff
    assert (execution.steps["a"].status, execution.steps["a"].not_before) == ("scheduled", 1.0)
    execution.wake(0.5, "o", env)  # too early
    assert execution.steps["a"].status == "scheduled"
    execution.wake(1.0, "o", env)
    step = execution.steps["a"]
    assert (execution.status, step.attempt, step.output, step.used) == ("SUCCEEDED", 2, {"n": 1}, 2)
    assert step.input == {"fields": {"n": 1}}
    events = execution.collect_events()
    assert [type(e).__name__ for e in events][2:] == [
        "StepScheduled",  # attempt 1 could not start: no output to carry
        "StepFailed",
        "StepScheduled",  # attempt 2 waits its backoff
        "StepSucceeded",  # the timer's doing, not a decision's: it names no node type
        "ExecutionFinished",
    ]
    assert events[-2].node_type is None


def test_executions_recorded_before_inline_transforms_keep_giving_them_to_runners() -> None:
    """Their events carry no `inline_steps`: transforms go to runners, as recorded."""
    execution = chain()
    execution.admit(0.0, "o")
    assert execution.steps["a"].task is not None and execution.status == "RUNNING"
    again = stored_without(chain(inline_steps=list(INLINE)).collect_events()[0], "inline_steps")
    assert again.inline_steps == frozenset()
    again.admit(0.0, "o")
    assert again.steps["a"].task is not None


def test_a_transforms_output_reads_the_same_from_memory_as_from_its_event() -> None:
    """Kept through JSON: what later steps read does not depend on whether the orchestrator
    still holds the execution or loaded it back from the store."""
    execution = started(
        {
            "start": node("trigger.manual"),
            "t": node(
                fields={"pairs": "{{ {'b': 1, 'a': 2} | dictsort }}", "keyed": "{{ {1: 'z'} }}"}
            ),
            "u": node(
                fields={
                    "first": "{{ steps.t.output.pairs[0] }}",
                    "z": "{{ steps.t.output.keyed['1'] }}",
                }
            ),
        },
        [("start", "t"), ("t", "u")],
        inline_steps=list(INLINE),
    )
    execution.admit(0.0, "o")
    assert execution.status == "SUCCEEDED", execution.error
    assert execution.steps["t"].output == {"pairs": [["a", 2], ["b", 1]], "keyed": {"1": "z"}}
    assert execution.steps["u"].output == {"first": ["a", 2], "z": "z"}
    again = replayed(execution.collect_events())
    assert again.steps["t"].output == execution.steps["t"].output


class _OneExecution:
    """The execution store of `ExecutionService.retry`: the original, and what it saves."""

    def __init__(self, original: Execution) -> None:
        self.original = original
        self.saved: list[Execution] = []

    def get(self, _kind: Any, execution_id: Any) -> Execution:
        assert execution_id == self.original.id
        return self.original

    def save(self, *aggregates: Execution, **_: Any) -> None:
        self.saved.extend(aggregates)


def _retried(original: Execution, from_node: str | None = None) -> Execution:
    from command_side.execution.service import ExecutionService

    store = _OneExecution(original)
    new_id = ExecutionService(store, None).retry("ws1", "u1", original.id, from_node)  # type: ignore[arg-type]
    (again,) = [e for e in store.saved if e.id == new_id]
    return again


def test_a_default_retry_starts_from_the_step_that_failed_for_good() -> None:
    # a would have been retried (3 attempts by default); b's failure ended the execution.
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node("http.request", url="http://a"),
            "b": node("http.request", url="http://b", retry={"max_attempts": 1}),
        },
        [("start", "a"), ("start", "b")],
    )
    execution.admit(0.0, "o")
    execution.record_failure("a", 1, "HttpStatusError", "503", "r")
    execution.record_failure("b", 1, "HttpStatusError", "500", "r")
    execution.advance(1.0, "o")
    assert (execution.status, execution.error) == ("FAILED", "b: 500")
    assert _retried(execution).trigger["from_node"] == "b"


def test_a_loop_item_retried_on_its_own_sees_what_it_saw_of_its_parent() -> None:
    parent = started(
        {
            "start": node("trigger.manual"),
            "prep": node(fields={"base": "http://api"}),
            "each": node("control.loop", items="{{ [1] }}"),
            "call": node(
                "http.request",
                url="{{ steps.prep.output.base }}/{{ inputs.item }}",
                retry={"max_attempts": 1},
            ),
        },
        [("start", "prep"), ("prep", "each"), ("each", "call", "body")],
        inline_steps=list(INLINE),
    )
    parent.admit(0.0, "o")
    (spec,) = parent.new_children
    item = child_of(spec)
    item.admit(1.0, "o")
    item.record_failure("call", 1, "HttpStatusError", "503", "r")
    item.advance(2.0, "o")
    assert item.status == "FAILED"
    again = _retried(item)
    again.admit(3.0, "o")
    call = again.steps["call"]
    assert (call.status, call.input) == ("scheduled", {"url": "http://api/1"}), again.error


class _Blobs(Isolated):
    """An artifact store in a dict: outputs over `limit` bytes are kept by reference."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.blobs: dict[str, Any] = {}
        self.limit = limit

    def resolve(self, workspace_id: str, value: Any) -> Any:
        if isinstance(value, dict) and "$artifact" in value:
            return self.blobs[value["$artifact"]["sha256"]]
        return value

    def keep(self, workspace_id: str, value: Any) -> Any:
        kept, size = as_json(value)
        if size <= self.limit:
            return kept
        digest = f"blob{len(self.blobs)}"
        self.blobs[digest] = kept
        return {"$artifact": {"sha256": digest}}

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        return Pinned(workflow_id, 1, {"t": node("trigger.manual")}, [], "t")


def test_templates_read_large_outputs_inside_merges_loops_and_subworkflows() -> None:
    """A step's large output is kept by reference; a merge, a loop or a subworkflow made of
    such outputs reads like any other output in the templates after it."""
    env = _Blobs()
    env.blobs["big"] = {"rows": [1, 2, 3]}
    big = {"$artifact": {"sha256": "big"}}
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node("http.request", url="http://a"),
            "b": node("http.request", url="http://b"),
            "m": node("control.merge", mode="all"),
            "each": node("control.loop", items="{{ [1, 2] }}", body_workflow_id="body"),
            "sub": node("control.subworkflow", workflow_id="child"),
            "use": node(
                fields={
                    "merged": "{{ steps.m.output.a.rows | length }}",
                    "looped": "{{ steps.each.output[1].rows | sum }}",
                    "called": "{{ steps.sub.output.fetch.rows | last }}",
                }
            ),
        },
        [
            ("start", "a"), ("start", "b"), ("a", "m"), ("b", "m"),
            ("m", "each"), ("each", "sub"), ("sub", "use"),
        ],
        inline_steps=list(INLINE),
    )  # fmt: skip
    execution.admit(0.0, "o", env)
    execution.record_success("a", 1, big, None, "r")
    execution.record_success("b", 1, {"ok": True}, None, "r")
    execution.advance(1.0, "o", env)
    assert execution.steps["m"].output == {"a": {"rows": [1, 2, 3]}, "b": {"ok": True}}
    for index in (0, 1):
        record = execution.children["each"][index]
        execution.child_finished(
            "each", 1, index, record["child_id"], "SUCCEEDED", big, None, 2.0, "o", env
        )
    record = execution.children["sub"][None]
    execution.child_finished(
        "sub", 1, None, record["child_id"], "SUCCEEDED", {"fetch": big}, None, 3.0, "o", env
    )
    use = execution.steps["use"]
    assert (use.status, use.output) == ("succeeded", {"merged": 3, "looped": 6, "called": 3})


def test_a_large_merge_is_kept_by_reference_like_any_large_output() -> None:
    env = _Blobs(limit=100)
    execution = started(
        {
            "start": node("trigger.manual"),
            "a": node("http.request", url="http://a"),
            "m": node("control.merge", mode="all"),
            "use": node(fields={"n": "{{ steps.m.output.a.text | length }}"}),
        },
        [("start", "a"), ("a", "m"), ("m", "use")],
        inline_steps=list(INLINE),
    )
    execution.admit(0.0, "o", env)
    execution.record_success("a", 1, env.keep("ws1", {"text": "x" * 500}), None, "r")
    execution.advance(1.0, "o", env)
    assert "$artifact" in execution.steps["m"].output
    assert execution.steps["use"].output == {"n": 500}


def test_nested_loops_run_whichever_loop_was_added_to_the_workflow_first() -> None:
    nodes = {
        "start": node("trigger.manual"),
        "inner": node("control.loop", items="{{ [inputs.item, inputs.item + 1] }}"),
        "outer": node("control.loop", items="{{ [10, 20] }}"),
        "work": node(fields={"x": "{{ inputs.item }}"}),
        "tail": node(fields={"y": 1}),
        "done": node(fields={"z": 1}),
    }
    edges: list[tuple[str, str] | tuple[str, str, str]] = [
        ("start", "outer"),
        ("outer", "inner", "body"),
        ("inner", "work", "body"),
        ("inner", "tail"),
        ("tail", "outer"),
        ("outer", "done"),
    ]
    execution = started(nodes, edges, inline_steps=list(INLINE))
    execution.admit(0.0, "o")
    assert execution.steps["outer"].status == "scheduled"
    assert "done" not in execution.steps
    (spec,) = execution.new_children
    assert set(spec.nodes) == {"item", "inner", "work", "tail"}
    item = child_of(spec)
    item.admit(1.0, "o")
    assert item.steps["inner"].status == "scheduled"
    assert [(set(c.nodes), c.inputs) for c in item.new_children] == [
        ({"item", "work"}, {"item": 10, "index": 0})
    ]


def test_an_execution_recorded_before_loop_rule_2_keeps_the_bodies_it_was_split_into() -> None:
    """`process` is both the loop's `body` and reached past it: the old split put it in the
    body; today's refuses such a graph (LOOP_BODY_EDGE) and would not. One recorded before
    runs on, and replays, as it was split."""
    nodes = {
        "start": node("trigger.manual"),
        "fetch": node(fields={"rows": [1, 2]}),
        "each": node("control.loop", items="{{ steps.fetch.output.rows }}"),
        "process": node(fields={"x": "{{ inputs.item }}"}),
    }
    edges = [
        ("start", "fetch"),
        ("fetch", "each"),
        ("each", "process", "body"),
        ("fetch", "process"),
    ]
    recorded = stored_without(
        started(nodes, edges, inline_steps=list(INLINE)).collect_events()[0], "loop_rule"
    )
    assert recorded.loop_rule == 1
    assert set(recorded.plan.bodies) == {"each"}
    assert set(recorded.plan.bodies["each"].nodes) == {"process"}
    recorded.admit(0.0, "o")
    (first,) = recorded.new_children  # the first row's (one at a time), running `process`
    assert set(first.nodes) == {"item", "process"}
    assert "process" not in started(nodes, edges).plan.bodies.get("each", ())


def test_a_loop_of_outputs_too_large_to_read_together_keeps_their_references() -> None:
    env = _Blobs()
    huge = {"$artifact": {"sha256": "never-read", "size": COMPOSE_LIMIT}}
    execution = started(
        {
            "start": node("trigger.manual"),
            "each": node("control.loop", items="{{ [1, 2] }}", body_workflow_id="body"),
        },
        [("start", "each")],
        inline_steps=list(INLINE),
    )
    execution.admit(0.0, "o", env)
    for index in (0, 1):
        record = execution.children["each"][index]
        execution.child_finished(
            "each", 1, index, record["child_id"], "SUCCEEDED", huge, None, 1.0, "o", env
        )
    assert execution.steps["each"].output == [huge, huge]  # nothing was read back


def test_a_childs_loops_are_split_by_its_parents_rule_only_in_the_parents_own_body() -> None:
    """A loop's body is part of its parent's graph, split with it; another workflow (a
    subworkflow, a `body_workflow_id`) was checked by today's rules and is split by them."""
    env = _Blobs()
    nodes = {
        "start": node("trigger.manual"),
        "own": node("control.loop", items="{{ [1] }}"),
        "work": node(),
        "other": node("control.loop", items="{{ [1] }}", body_workflow_id="body"),
        "sub": node("control.subworkflow", workflow_id="child"),
    }
    edges = [("start", "own"), ("own", "work", "body"), ("start", "other"), ("start", "sub")]
    for rule in (1, LOOP_RULE):
        execution = started(nodes, edges, inline_steps=list(INLINE), loop_rule=rule)
        execution.admit(0.0, "o", env)
        rules = {spec.trigger["node_id"]: spec.loop_rule for spec in execution.new_children}
        assert rules == {"own": rule, "other": LOOP_RULE, "sub": LOOP_RULE}
