"""Properties of the Execution aggregate over random graphs and random runner behaviour:
its events fold back into the same state, every run ends in exactly one terminal state, and
replaying the record finds no divergence."""

from __future__ import annotations

from functools import reduce
from typing import Any
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from command_side.execution.aggregate import INLINE, Execution, Isolated, Pinned
from command_side.execution.service import replay_events

KINDS = [
    "data.transform",
    "http.request",
    "control.if",
    "control.merge",
    "control.loop",
    "control.subworkflow",
]


class Children(Isolated):
    """Where loops' bodies and subworkflows come from: one published workflow."""

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        return Pinned("child", 1, {"t": {"type": "trigger.manual", "config": {}}}, [], "t")


@st.composite
def workflows(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    size = draw(st.integers(1, 8))
    names = [f"n{i}" for i in range(1, size + 1)]
    nodes: dict[str, Any] = {"n0": {"type": "trigger.manual", "config": {}}}
    for name in names:
        kind = draw(st.sampled_from(KINDS))
        config: dict[str, Any] = {}
        if kind == "control.if":
            config = {
                "condition": draw(st.sampled_from(["{{ inputs.flag }}", "{{ not inputs.flag }}"]))
            }
        elif kind == "http.request":
            config = {"url": "http://api/{{ execution.id }}", "retry": {"max_attempts": 2}}
        elif kind == "control.merge":
            config = {"mode": draw(st.sampled_from(["all", "any"]))}
        elif kind == "data.transform":
            config = {"fields": {"flag": "{{ inputs.flag }}", "id": "{{ execution.id }}"}}
        elif kind == "control.loop":
            config = {
                "items": draw(st.sampled_from(["{{ [] }}", "{{ [1] }}", "{{ [1, 2, 3] }}"])),
                "concurrency": draw(st.integers(1, 2)),
                "body_workflow_id": "child",
                "retry": {"max_attempts": 2, "initial_interval_s": 5},
            }
        elif kind == "control.subworkflow":
            config = {"workflow_id": "child", "retry": {"max_attempts": 2, "initial_interval_s": 5}}
        nodes[name] = {"type": kind, "config": config}
    edges = []
    everything = ["n0", *names]
    for i, target in enumerate(names, start=1):
        sources = draw(st.sets(st.sampled_from(everything[:i]), min_size=1, max_size=2))
        for source in sorted(sources):
            label = None
            if nodes[source]["type"] == "control.if":
                label = draw(st.sampled_from(["true", "false"]))
            elif draw(st.booleans()) and draw(st.booleans()):
                label = "error"
            condition = None
            if label != "error" and draw(st.integers(0, 3)) == 0:
                condition = draw(
                    st.sampled_from(
                        ["{{ inputs.flag }}", "{{ not inputs.flag }}", "{{ output is not none }}"]
                    )
                )
            edges.append(
                {"source": source, "target": target, "label": label, "condition": condition}
            )
    return nodes, edges


def fold(events: list[Any]) -> Execution:
    return reduce(lambda aggregate, e: e.mutate(aggregate), events, None)  # type: ignore[arg-type,return-value]


def assert_child_counts(execution: Execution) -> None:
    """What the aggregate keeps counted of its children is what its records say."""
    records = execution.children
    assert execution.running_children() == [
        r["child_id"] for rs in records.values() for r in rs.values() if r["status"] == "RUNNING"
    ]
    assert {n: c for n, c in execution.children_unsuccessful.items() if c} == {
        n: k
        for n, rs in records.items()
        if (k := sum(1 for r in rs.values() if r["status"] not in ("RUNNING", "SUCCEEDED")))
    }


@settings(max_examples=150, deadline=None)
@given(
    workflows(),
    st.booleans(),
    st.booleans(),
    st.lists(
        st.sampled_from(["ok", "fail", "final", "lapse", "handback"]), min_size=40, max_size=40
    ),
)
def test_events_fold_back_and_replay_finds_no_divergence(
    workflow: tuple[dict[str, Any], list[dict[str, Any]]],
    flag: bool,
    inline: bool,
    behaviour: list[str],
) -> None:
    """`inline`: transforms complete in the orchestrator (executions since 2026-12-04) or go
    to runners (those recorded before)."""
    nodes, edges = workflow
    execution = Execution(
        execution_id=uuid4(), workflow_id="w", workflow_version=1, nodes=nodes, edges=edges,
        start="n0", inputs={"flag": flag}, actor_id="u", workspace_id="ws",
        inline_steps=list(INLINE) if inline else None,
    )  # fmt: skip
    now = 0.0
    env = Children()
    execution.admit(now, "o", env)
    moves = iter(behaviour * 10)
    for _ in range(200):
        if execution.finished:
            break
        now += 100.0
        for node_id, records in list(execution.children.items()):
            attempt = execution.steps[node_id].attempt
            for index, record in list(records.items()):
                if record["status"] != "RUNNING" or execution.finished:
                    continue
                move = next(moves)
                if move in ("ok", "final"):
                    status, output = (
                        ("SUCCEEDED", {"i": index}) if move == "ok" else ("FAILED", None)
                    )
                    execution.child_finished(
                        node_id, attempt, index, record["child_id"], status, output,
                        None if output else "bad", now, "o", env,
                    )  # fmt: skip
        running = [(n, s) for n, s in execution.steps.items() if s.status == "scheduled" and s.task]
        for node_id, step in running:
            move = next(moves)
            if move == "ok":
                execution.record_success(node_id, step.attempt, {"at": node_id}, None, "r")
            elif move == "fail":
                execution.record_failure(node_id, step.attempt, "Boom", "boom", "r")
            elif move == "final":
                execution.record_failure(node_id, step.attempt, "Bad", "bad", "r", retryable=False)
            elif move == "handback":
                execution.record_failure(
                    node_id, step.attempt, "HandedBack", "bye", "r", charged=False
                )
        if any(next(moves) == "lapse" for _ in range(1)):
            execution.overdue(now, 50.0, {})
        execution.advance(now, "o", env)
        execution.wake(now + 1000.0, "o", env)
        assert_child_counts(execution)
    assert execution.finished, execution.steps
    events = execution.collect_events()
    if inline:  # no transform ever reached a runner
        assert not [
            e
            for e in events
            if type(e).__name__ == "StepScheduled" and e.node_type == "data.transform" and e.pool
        ]
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("ExecutionFinished") == 1 and kinds[-1] == "ExecutionFinished"
    again = fold(events)
    assert_child_counts(again)
    assert (again.status, again.error, again.output) == (
        execution.status,
        execution.error,
        execution.output,
    )
    assert {n: (s.status, s.attempt, s.output, s.blocked) for n, s in again.steps.items()} == {
        n: (s.status, s.attempt, s.output, s.blocked) for n, s in execution.steps.items()
    }
    report = replay_events(events, str(execution.id), execution.status)
    assert report.deterministic, report.divergences
