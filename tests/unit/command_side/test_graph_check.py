"""validateWorkflow's graph check: every problem at once, each naming its nodes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from command_side.workflow.graph_check import check_graph

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
