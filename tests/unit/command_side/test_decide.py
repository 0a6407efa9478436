"""The orchestrator's pure decisions, driven step by step as the orchestrator will drive them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from command_side.execution import Edge, Finish, Plan, RetryPolicy, Schedule, Skip, Step, decide
from command_side.execution.decide import split_loops
from tests.strategies import loop_graphs

Outcome = tuple[str, Any]  # ("succeeded", branch or None) or ("failed", error type)


def node(kind: str = "data.transform", **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


def run(
    plan: Plan, behaviour: Callable[[str, int], Outcome] | None = None
) -> tuple[Finish, list[tuple[str, int, float]], dict[str, Step]]:
    """Drive `decide` to the end: every scheduled step runs at once and reports."""
    behaviour = behaviour or (lambda node_id, attempt: ("succeeded", None))
    steps = {plan.start: Step(status="succeeded", attempt=1)}
    ran: list[tuple[str, int, float]] = []
    now = 0.0
    for _ in range(1000):
        actions = decide(plan, steps, now)
        assert actions, f"stuck with {steps}"
        for action in actions:
            if isinstance(action, Finish):
                return action, ran, steps
            if isinstance(action, Skip):
                steps[action.node_id] = Step(status="skipped")
            elif isinstance(action, Schedule):
                ran.append((action.node_id, action.attempt, action.not_before))
                status, detail = behaviour(action.node_id, action.attempt)
                steps[action.node_id] = Step(
                    status=status,
                    attempt=action.attempt,
                    branch=detail if status == "succeeded" else None,
                    error={"type": detail, "message": "boom"} if status == "failed" else None,
                )
        now += 1
    raise AssertionError("never finished")


@st.composite
def dags(draw: st.DrawFn) -> Plan:
    size = draw(st.integers(2, 9))
    names = [f"n{i}" for i in range(size)]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=20))
    nodes = {n: node() for n in names}
    nodes["n0"] = node("trigger.manual")
    return Plan(nodes, [Edge(a, b) for a, b in sorted(edges)], start="n0")


def reachable(plan: Plan) -> set[str]:
    seen, frontier = {plan.start}, [plan.start]
    while frontier:
        for edge in plan.outgoing(frontier.pop()):
            if edge.target not in seen:
                seen.add(edge.target)
                frontier.append(edge.target)
    return seen


@given(dags())
def test_every_reachable_node_runs_once_the_rest_are_skipped(plan: Plan) -> None:
    finish, ran, steps = run(plan)
    assert finish == Finish("SUCCEEDED")
    ran_ids = [n for n, _, _ in ran]
    assert sorted(ran_ids) == sorted(reachable(plan) - {plan.start})
    assert len(ran_ids) == len(set(ran_ids))
    skipped = {n for n, s in steps.items() if s.status == "skipped"}
    assert skipped == set(plan.nodes) - reachable(plan)


@given(dags())
def test_a_node_runs_only_after_everything_before_it(plan: Plan) -> None:
    _, ran, _ = run(plan)
    order = {n: i for i, (n, _, _) in enumerate(ran)}
    for edge in plan.edges:
        if edge.source in order and edge.target in order:
            assert order[edge.source] < order[edge.target]


def test_if_takes_one_branch_and_the_merge_after_it_still_runs() -> None:
    plan = Plan(
        {
            "start": node("trigger.manual"),
            "check": node("control.if", condition="{{ inputs.ok }}"),
            "yes": node(),
            "no": node(),
            "after_no": node(),
            "join": node("control.merge", mode="all"),
        },
        [
            Edge("start", "check"),
            Edge("check", "yes", "true"),
            Edge("check", "no", "false"),
            Edge("no", "after_no"),
            Edge("yes", "join"),
            Edge("after_no", "join"),
        ],
        start="start",
    )
    finish, ran, steps = run(plan, lambda n, a: ("succeeded", "true" if n == "check" else None))
    assert finish == Finish("SUCCEEDED")
    assert [n for n, _, _ in ran] == ["check", "yes", "join"]
    assert steps["no"].status == steps["after_no"].status == "skipped"


def test_retries_back_off_then_succeed() -> None:
    retry = {"max_attempts": 4, "initial_interval_s": 2, "backoff": 3, "max_interval_s": 10}
    plan = Plan(
        {"start": node("trigger.manual"), "call": node("http.request", url="u", retry=retry)},
        [Edge("start", "call")],
        start="start",
    )
    finish, ran, _ = run(plan, lambda n, a: ("failed", "Timeout") if a < 4 else ("succeeded", None))
    assert finish == Finish("SUCCEEDED")
    attempts = [(a, t) for n, a, t in ran if n == "call"]
    # Scheduled at step 0; failures seen at 1, 2, 3; waits 2, 6, then capped at 10.
    assert attempts == [(1, 0.0), (2, 1 + 2.0), (3, 2 + 6.0), (4, 3 + 10.0)]


def test_a_failure_ends_the_execution_unless_an_error_edge_handles_it() -> None:
    def plan(with_handler: bool) -> Plan:
        edges = [Edge("start", "call"), Edge("call", "next")]
        if with_handler:
            edges.append(Edge("call", "recover", "error"))
        return Plan(
            {
                "start": node("trigger.manual"),
                "call": node("http.request", url="u", retry={"non_retryable": ["BadRequest"]}),
                "next": node(),
                "recover": node(),
            },
            edges,
            start="start",
        )

    fails = lambda n, a: ("failed", "BadRequest") if n == "call" else ("succeeded", None)  # noqa: E731
    finish, ran, _ = run(plan(False), fails)
    assert finish.status == "FAILED" and finish.error and finish.error.startswith("call:")
    assert [(n, a) for n, a, _ in ran] == [("call", 1)]  # not retryable: one attempt
    finish, ran, steps = run(plan(True), fails)
    assert finish == Finish("SUCCEEDED")
    assert [n for n, _, _ in ran] == ["call", "recover"]
    assert steps["next"].status == "skipped"


def test_merge_any_runs_on_the_first_branch_all_waits_for_every_branch() -> None:
    def plan(mode: str) -> Plan:
        return Plan(
            {
                "start": node("trigger.manual"),
                "fast": node(),
                "slow1": node(),
                "slow2": node(),
                "join": node("control.merge", mode=mode),
            },
            [
                Edge("start", "fast"),
                Edge("start", "slow1"),
                Edge("slow1", "slow2"),
                Edge("fast", "join"),
                Edge("slow2", "join"),
            ],
            start="start",
        )

    _, ran_any, _ = run(plan("any"))
    _, ran_all, _ = run(plan("all"))
    when_any = {n: t for n, _, t in ran_any}
    when_all = {n: t for n, _, t in ran_all}
    assert when_any["join"] <= when_any["slow2"]  # did not wait for the slow branch
    assert when_all["join"] > when_all["slow2"]
    assert [n for n, _, _ in ran_any].count("join") == 1


def test_stop_ends_the_execution_with_its_outcome() -> None:
    plan = Plan(
        {
            "start": node("trigger.manual"),
            "halt": node("control.stop", outcome="fail", message="no invoices today"),
            "never": node(),
        },
        [Edge("start", "halt"), Edge("halt", "never")],
        start="start",
    )
    finish, ran, _ = run(plan)
    assert finish == Finish("FAILED", "halt: no invoices today")
    assert [n for n, _, _ in ran] == ["halt"]


def test_a_loop_is_not_held_up_by_the_edge_its_body_returns_on() -> None:
    plan = Plan(
        {
            "start": node("trigger.manual"),
            "each": node("control.loop", items="{{ inputs.rows }}"),
            "body": node(),
            "after": node(),
        },
        [Edge("start", "each"), Edge("each", "body"), Edge("body", "each"), Edge("each", "after")],
        start="start",
    )
    finish, ran, _ = run(plan)
    assert finish == Finish("SUCCEEDED")
    assert ran[0][0] == "each"


def test_backoff_never_overflows() -> None:
    assert RetryPolicy(backoff=1e200, max_interval_s=30).delay(50) == 30


Graph = tuple[dict[str, dict[str, Any]], list[tuple[str, str, Any]]]


def split_shape(nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str, Any]]) -> Any:
    """What `split_loops` makes of a graph, whatever order it lists things in."""
    outer, outer_edges, bodies = split_loops(nodes, [Edge(*e) for e in edges])
    return (
        set(outer),
        set(outer_edges),
        {loop: (set(b.nodes), set(b.edges), set(b.entries)) for loop, b in bodies.items()},
    )


@given(loop_graphs(), st.data())
def test_loop_bodies_do_not_depend_on_the_order_of_nodes_or_edges(
    graph: Graph, data: st.DataObject
) -> None:
    nodes, edges = graph
    shuffled = {n: nodes[n] for n in data.draw(st.permutations(list(nodes)))}
    assert split_shape(shuffled, data.draw(st.permutations(edges))) == split_shape(nodes, edges)


@given(loop_graphs())
def test_a_body_holds_only_nodes_the_workflow_reaches_through_its_loop(graph: Graph) -> None:
    nodes, edges = graph
    for loop, body in split_loops(nodes, [Edge(*e) for e in edges])[2].items():
        around = {"start"}
        frontier = ["start"]
        while frontier:  # everything reached from the trigger without passing the loop
            current = frontier.pop()
            for source, target, _ in edges:
                if source == current and target != loop and target not in around:
                    around.add(target)
                    frontier.append(target)
        assert not around & set(body.nodes), (loop, body.nodes)


NESTED = {
    "start": node("trigger.manual"),
    "inner": node("control.loop", items="{{ [1, 2] }}"),
    "outer": node("control.loop", items="{{ [10, 20] }}"),
    "work": node(),
    "tail": node(),
    "done": node(),
}


def test_a_loop_in_a_body_belongs_to_it_whichever_was_added_first() -> None:
    edges = [
        Edge("start", "outer"),
        Edge("outer", "inner", "body"),
        Edge("inner", "work", "body"),
        Edge("inner", "tail"),
        Edge("tail", "outer"),
        Edge("outer", "done"),
    ]
    for order in (["inner", "outer"], ["outer", "inner"]):
        nodes = {n: NESTED[n] for n in ["start", *order, "work", "tail", "done"]}
        outer, outer_edges, bodies = split_loops(nodes, edges)
        assert set(outer) == {"start", "outer", "done"}
        assert set(outer_edges) == {edges[0], edges[-1]}
        assert set(bodies) == {"outer"}
        assert set(bodies["outer"].nodes) == {"inner", "work", "tail"}
        assert bodies["outer"].entries == ("inner",)
        child = {"item": node("trigger.manual"), **bodies["outer"].nodes}
        inner_edges = [*bodies["outer"].edges, Edge("item", "inner")]
        _, _, inside = split_loops(child, inner_edges)
        assert {n: set(b.nodes) for n, b in inside.items()} == {"inner": {"work"}}


def test_a_loop_in_a_body_brings_its_whole_body_along() -> None:
    # The outer body is a cycle (no `body` label); the inner body is `work`, which does not
    # lead back to the outer loop.
    edges = [
        Edge("start", "outer"),
        Edge("outer", "inner"),
        Edge("inner", "work", "body"),
        Edge("inner", "tail"),
        Edge("tail", "outer"),
        Edge("outer", "done"),
    ]
    _, _, bodies = split_loops(NESTED, edges)
    assert set(bodies["outer"].nodes) == {"inner", "work", "tail"}
