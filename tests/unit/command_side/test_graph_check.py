"""validateWorkflow's graph check: every problem at once, each naming its nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from command_side.execution.decide import Edge, Plan, Schedule, Step, decide, split_loops
from command_side.workflow.graph_check import Problem, check_graph
from tests.strategies import loop_graphs

NAMES = [f"n{i}" for i in range(8)]


def on_a_cycle(edges: set[tuple[str, str]], node: str) -> bool:
    """Brute force: can `node` reach itself?"""
    seen, frontier = set(), [t for s, t in edges if s == node]
    while frontier:
        current = frontier.pop()
        if current == node:
            return True
        if current not in seen:
            seen.add(current)
            frontier += [t for s, t in edges if s == current]
    return False


graphs = st.tuples(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=8, unique=True),
    st.sets(st.tuples(st.sampled_from(NAMES), st.sampled_from(NAMES)), max_size=20),
)


@given(graphs, st.data())
def test_cycles_are_exactly_the_nodes_that_reach_themselves(graph, data) -> None:  # type: ignore[no-untyped-def]
    names, raw_edges = graph
    edges = {(s, t) for s, t in raw_edges if s in names and t in names}
    trigger = data.draw(st.sampled_from(names))
    nodes = {
        n: {"type": "trigger.manual" if n == trigger else "data.transform", "config": {}}
        for n in names
    }
    problems = check_graph(nodes, edges)
    in_cycles = {n for p in problems if p.code == "CYCLE" for n in p.node_ids}
    assert in_cycles == {n for n in names if on_a_cycle(edges, n)}


@given(graphs, st.data())
def test_unreachable_nodes_are_exactly_those_no_trigger_leads_to(graph, data) -> None:  # type: ignore[no-untyped-def]
    names, raw_edges = graph
    edges = {(s, t) for s, t in raw_edges if s in names and t in names}
    triggers = set(data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
    nodes = {
        n: {"type": "trigger.manual" if n in triggers else "data.transform", "config": {}}
        for n in names
    }
    reached = set(triggers)
    for _ in names:
        reached |= {t for s, t in edges if s in reached}
    problems = check_graph(nodes, edges)
    unreachable = {n for p in problems if p.code == "UNREACHABLE" for n in p.node_ids}
    assert unreachable == set(names) - reached


def test_a_cycle_through_a_loop_node_is_allowed_and_every_problem_is_reported() -> None:
    nodes = {
        "start": {"type": "trigger.manual", "config": {}},
        "each": {"type": "control.loop", "config": {"items": "{{ inputs.rows }}"}},
        "body": {"type": "data.transform", "config": {}},
        "a": {"type": "data.transform", "config": {}},
        "b": {"type": "data.transform", "config": {}},
        "fetch": {"type": "http.request", "config": {}},
        "orphan": {"type": "data.transform", "config": {}},
    }
    edges = [
        ("start", "each"),
        ("each", "body"),
        ("body", "each"),  # the loop's body returns to it: fine
        ("start", "a"),
        ("a", "b"),
        ("b", "a"),  # a plain cycle: not fine
        ("b", "fetch"),
    ]
    problems = {(p.code, p.node_ids) for p in check_graph(nodes, edges)}
    assert problems == {
        ("CYCLE", ("a", "b")),
        ("UNREACHABLE", ("orphan",)),
        ("INVALID_CONFIG", ("fetch",)),  # no url
    }
    assert [p.code for p in check_graph({"x": {"type": "data.transform"}}, [])] == [
        "MISSING_TRIGGER"
    ]


def test_a_plain_cycle_inside_a_loop_body_is_still_a_cycle() -> None:
    nodes = {
        "t": {"type": "trigger.manual", "config": {}},
        "each": {"type": "control.loop", "config": {"items": "{{ inputs.rows }}"}},
        "a": {"type": "data.transform", "config": {}},
        "b": {"type": "data.transform", "config": {}},
    }
    edges = [("t", "each"), ("each", "a"), ("a", "b"), ("b", "a"), ("b", "each")]
    assert [(p.code, p.node_ids) for p in check_graph(nodes, edges)] == [("CYCLE", ("a", "b"))]


def test_switch_cases_may_not_be_named_error() -> None:
    problems = check_graph(
        {
            "t": {"type": "trigger.manual", "config": {}},
            "s": {
                "type": "control.switch",
                "config": {"value": "{{ inputs.x }}", "cases": ["a", "error"]},
            },
        },
        [("t", "s")],
    )
    assert [p.code for p in problems] == ["INVALID_CONFIG"]


def test_a_condition_that_does_not_parse_names_its_edge() -> None:
    nodes = {
        "t": {"type": "trigger.manual", "config": {}},
        "a": {"type": "data.transform", "config": {}},
        "b": {"type": "data.transform", "config": {}},
    }
    edges = [("t", "a"), ("t", "b")]
    problems = check_graph(nodes, edges, {("t", "a"): "{{ output.x > 1 }}", ("t", "b"): "{% if %}"})
    assert [(p.code, p.node_ids) for p in problems] == [("INVALID_CONDITION", ("t", "b"))]
    assert problems[0].message.startswith("edge t → b: condition: template does not parse")


def transform(**fields: str) -> dict[str, object]:
    return {"type": "data.transform", "config": {"fields": fields}}


def test_templates_reading_a_step_that_is_not_upstream_are_named() -> None:
    nodes = {
        "t": {"type": "trigger.manual", "config": {}},
        "a": transform(x="{{ steps.t.output }}"),
        "side": transform(),
        "c": transform(a="{{ steps.a.output }}", side="{{ steps['side'].output }}"),
        "d": transform(later="{{ steps.e.output }}", gone="{{ steps.nowhere }}"),
        "e": transform(),
    }
    edges = [("t", "a"), ("t", "side"), ("a", "c"), ("c", "d"), ("d", "e")]
    problems = check_graph(nodes, edges, {("a", "c"): "{{ steps.side.output and output }}"})
    assert [(p.code, p.node_ids) for p in problems] == [
        ("NOT_UPSTREAM", ("c", "side")),
        ("NOT_UPSTREAM", ("d", "e")),
        ("NOT_UPSTREAM", ("d",)),
        ("NOT_UPSTREAM", ("a", "c")),
    ]
    assert problems[0].message == (
        "c.fields.side reads steps.side, which is not upstream of c "
        "(no path of edges leads from side to it)"
    )
    assert problems[2].message.endswith("steps.nowhere, which is not a node of this workflow")
    assert problems[3].message.startswith("the condition of edge a → c reads steps.side")


def test_a_loop_body_reads_what_its_loop_reads_and_its_own_earlier_steps() -> None:
    nodes = {
        "t": {"type": "trigger.manual", "config": {}},
        "before": transform(),
        "each": {"type": "control.loop", "config": {"items": "{{ steps.before.output }}"}},
        "first": transform(v="{{ steps.before.output }} {{ steps.item.output.index }}"),
        "second": transform(v="{{ steps.first.output }} {{ steps.after.output }}"),
        "after": transform(v="{{ steps.each.output }} {{ steps.first.output }}"),
    }
    edges = [
        ("t", "before"),
        ("before", "each"),
        ("each", "first", "body"),
        ("first", "second"),
        ("second", "each"),
        ("each", "after"),
    ]
    problems = check_graph(nodes, edges)
    # `after` is not in the body: it cannot read a step of one iteration
    assert [(p.code, p.node_ids) for p in problems] == [
        ("NOT_UPSTREAM", ("after", "first")),
        ("NOT_UPSTREAM", ("second", "after")),
    ]


def test_mapping_methods_and_notes_are_not_step_reads_and_per_item_templates_are() -> None:
    nodes = {
        "t": {"type": "trigger.manual", "config": {}},
        "a": transform(),
        "item": transform(  # a node may be called `item` outside loop bodies
            every="{{ steps.items() | list }}",
            known="{{ steps.keys() | list }} {{ steps.get('a') }}",
        ),
        "beside": transform(later="{{ steps.get('b') }}"),
        "b": {
            "type": "data.filter",
            "config": {
                "items": "{{ [1, 2] }}",
                # Rendered per item by the runner, with the steps upstream of `b`.
                "condition": "{{ item > 1 and steps.nothing and steps.a }}",
                "notes": "{{ steps.whatever }}",
            },
        },
    }
    edges = [("t", "a"), ("a", "item"), ("t", "beside"), ("t", "b")]
    assert [(p.code, p.node_ids) for p in check_graph(nodes, edges)] == [
        ("NOT_UPSTREAM", ("b",)),  # steps.nothing: no such step
        ("NOT_UPSTREAM", ("b", "a")),  # steps.a: beside b, not before it
        ("NOT_UPSTREAM", ("beside", "b")),  # steps.get('b') of a step beside it
    ]


def step(kind: str = "data.transform", **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


EdgeSpec = tuple[str, str] | tuple[str, str, str | None]


LOOP = step("control.loop", items="{{ inputs.rows }}")


def found(problems: list[Problem]) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.code, p.node_ids) for p in problems]


def test_an_edge_leaving_a_loop_body_is_reported_and_a_body_edge_takes_its_target_in() -> None:
    nodes = {"start": step("trigger.manual"), "each": LOOP, "call": step(), "notify": step()}
    # The body is the cycle each → call → each: the handler is outside it.
    cycle: list[EdgeSpec] = [
        ("start", "each"), ("each", "call"), ("call", "each"), ("call", "notify", "error")
    ]  # fmt: skip
    problems = check_graph(nodes, cycle)
    assert found(problems) == [("LOOP_BODY_EDGE", ("call", "notify"))]
    assert problems[0].message.startswith("edge call → notify leaves the body of loop each")
    # Labelled `body`, the loop's edge makes everything the body reaches part of it.
    labelled: list[EdgeSpec] = [
        ("start", "each"), ("each", "call", "body"), ("call", "notify", "error")
    ]  # fmt: skip
    assert check_graph(nodes, labelled) == []
    _, _, bodies = split_loops(nodes, [Edge(*e) for e in labelled])
    assert set(bodies["each"].nodes) == {"call", "notify"}
    # Two ways into a body (a `body` edge, and a plain one to a node leading back) and what
    # runs after the loop.
    both = [*labelled, ("each", "retry"), ("retry", "each"), ("each", "after")]
    assert check_graph({**nodes, "retry": step(), "after": step()}, both) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        # A node beside the body with an edge into it.
        (
            [("start", "each"), ("each", "a"), ("a", "each"), ("each", "x"), ("x", "b"),
             ("each", "b", "body")],
            [("LOOP_BODY_EDGE", ("x", "b"))],
        ),
        # The loop's plain edge to a node its body reaches: per item, or after the loop?
        (
            [("start", "each"), ("each", "a", "body"), ("a", "b"), ("each", "b"), ("b", "x")],
            [("LOOP_BODY_EDGE", ("each", "b"))],
        ),
        # The loop's error edge into its own body.
        (
            [("start", "each"), ("each", "a", "body"), ("a", "b"), ("each", "b", "error"),
             ("b", "x")],
            [("LOOP_BODY_EDGE", ("each", "b"))],
        ),
        # A body edge to a node the trigger reaches on its own.
        (
            [("start", "each"), ("each", "a", "body"), ("start", "b"), ("each", "b", "body"),
             ("b", "x"), ("a", "x")],
            [("LOOP_BODY_EDGE", ("a", "x")), ("LOOP_BODY_EDGE", ("each", "b"))],
        ),
        # An error edge back to the loop: the body's executions have no loop to go to.
        (
            [("start", "each"), ("each", "a", "body"), ("a", "b"), ("b", "each", "error"),
             ("each", "x")],
            [("LOOP_BODY_EDGE", ("b", "each"))],
        ),
        # A cycle back to the loop through a node the trigger reaches on its own.
        (
            [("start", "each"), ("each", "a"), ("a", "each"), ("start", "a"), ("each", "b"),
             ("b", "x")],
            [("CYCLE", ("a", "each"))],
        ),
    ],
)  # fmt: skip
def test_every_edge_across_the_boundary_of_a_loop_body_is_reported(
    edges: list[EdgeSpec], expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    nodes = {"start": step("trigger.manual"), "each": LOOP, "a": step(), "b": step(),
             "x": step()}  # fmt: skip
    assert found(check_graph(nodes, edges)) == expected


def test_an_edge_leaving_a_loop_body_inside_another_body_is_reported() -> None:
    nodes = {
        "start": step("trigger.manual"),
        "inner": LOOP,
        "outer": LOOP,
        "work": step(),
        "tail": step(),
    }
    edges: list[EdgeSpec] = [
        ("start", "outer"),
        ("outer", "inner", "body"),
        ("inner", "work"),
        ("work", "inner"),
        ("work", "tail", "error"),  # out of the inner body, still in the outer one
        ("inner", "tail"),
        ("tail", "outer"),
    ]
    assert found(check_graph(nodes, edges)) == [("LOOP_BODY_EDGE", ("work", "tail"))]
    assert found(check_graph(nodes, edges[:4] + edges[5:])) == []


def test_a_node_named_item_is_reported_in_a_loop_body_which_runs_from_a_trigger_so_named() -> None:
    nodes = {
        "start": step("trigger.manual"),
        "each": LOOP,
        "item": step(fields={"v": "{{ inputs.item }}"}),
        "next": step(fields={"w": "{{ steps.item.output.v }}"}),
    }
    edges: list[EdgeSpec] = [("start", "each"), ("each", "item", "body"), ("item", "next")]
    problems = check_graph(nodes, edges)
    assert found(problems) == [("RESERVED_ID", ("item",))]
    assert problems[0].message.startswith("node item is in the body of loop each")
    nested = {**nodes, "rows": LOOP}
    edges = [("start", "rows"), ("rows", "each", "body"), *edges[1:]]
    assert found(check_graph(nested, edges)) == [("RESERVED_ID", ("item",))]


def test_edges_an_if_or_a_switch_never_takes_are_reported() -> None:
    nodes = {
        "start": step("trigger.manual"),
        "check": step("control.if", condition="{{ inputs.n > 0 }}"),
        "route": step("control.switch", value="{{ inputs.kind }}", cases=["a", "b"]),
        "later": step("control.switch", value="{{ inputs.kind }}", cases=["{{ inputs.case }}"]),
        "x": step(),
        "y": step(),
    }
    edges: list[EdgeSpec] = [
        ("start", "check"),
        ("check", "x"),  # no label
        ("check", "y", "True"),
        ("check", "route", "true"),
        ("check", "later", "false"),
        ("check", "x", "error"),
        ("route", "x", "a"),
        ("route", "y", "c"),
        ("route", "y", "default"),
        ("route", "x", "error"),
        ("later", "x", "anything"),  # its cases are known once rendered
        ("start", "y", "error"),  # a trigger never fails
        ("x", "y", "body"),  # not out of a loop
    ]
    problems = check_graph(nodes, edges)
    assert found(problems) == [
        ("INVALID_LABEL", ("check", "x")),
        ("INVALID_LABEL", ("check", "y")),
        ("INVALID_LABEL", ("route", "y")),
        ("INVALID_LABEL", ("start", "y")),
        ("INVALID_LABEL", ("x", "y")),
    ]
    assert problems[0].message.startswith("edge check → x (no label): never taken")
    assert "(a, b), else default" in problems[2].message


def _taken(kind: str, config: dict[str, Any], label: str | None, outcomes: list[Step]) -> bool:
    """Whether any outcome of the edge's source sets its target running."""
    plan = Plan(
        {"start": step("trigger.manual"), "s": step(kind, **config), "t": step()},
        [Edge("start", "s"), Edge("s", "t", label)],
        start="start",
    )
    for outcome in outcomes:
        steps = {"start": Step(status="succeeded", attempt=1), "s": outcome}
        if Schedule("t", 1, 0.0) in decide(plan, steps, 0.0):
            return True
    return False


branch_labels = st.one_of(
    st.none(), st.sampled_from(["true", "false", "error", "default", "True"]), st.text("abc")
)


@given(branch_labels, st.lists(st.text("abc", min_size=1, max_size=2), min_size=1, unique=True))
def test_an_if_or_switch_edge_is_reported_exactly_when_no_outcome_takes_it(
    label: str | None, cases: list[str]
) -> None:
    failed = Step(status="failed", attempt=1, error={"type": "TemplateError", "retryable": False})
    shapes: list[tuple[str, dict[str, Any], list[str]]] = [
        ("control.if", {"condition": "{{ 1 }}"}, ["true", "false"]),
        ("control.switch", {"value": "{{ 1 }}", "cases": cases}, [*cases, "default"]),
    ]
    for kind, config, branches in shapes:
        outcomes = [Step(status="succeeded", attempt=1, branch=b) for b in branches]
        nodes = {"start": step("trigger.manual"), "s": step(kind, **config), "t": step()}
        reported = check_graph(nodes, [("start", "s"), ("s", "t", label)]) != []
        assert reported == (not _taken(kind, config, label, [*outcomes, failed])), kind


def _dropped(nodes: Mapping[str, Mapping[str, Any]], edges: list[Edge]) -> set[Edge]:
    """Edges no execution follows: not in the graph it runs, not one of a loop's edges into
    its body nor of a body's back to its loop, and not followed in a body either."""
    _, outer_edges, bodies = split_loops(nodes, edges)
    kept = set(outer_edges)
    for loop, body in bodies.items():
        kept |= {e for e in edges if e.source == loop and e.target in body.entries}
        kept |= {e for e in edges if e.source in body.nodes and e.target == loop}
        child = {"item": step("trigger.manual"), **body.nodes}
        into = [Edge("item", entry) for entry in body.entries]
        kept |= set(body.edges) - _dropped(child, [*body.edges, *into])
    return set(edges) - kept


@settings(max_examples=300)
@given(loop_graphs())
def test_a_workflow_without_problems_has_no_edge_an_execution_would_not_follow(
    graph: tuple[dict[str, dict[str, Any]], list[tuple[str, str, str | None]]],
) -> None:
    nodes, edges = graph
    if not check_graph(nodes, edges):
        assert _dropped(nodes, [Edge(*e) for e in edges]) == set()
