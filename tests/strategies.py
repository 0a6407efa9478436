"""Hypothesis strategies: random editing sessions on a workflow."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from command_side.workflow import commands as c

NODE_IDS = ["a", "b", "c", "d", "e"]
node_ids = st.sampled_from(NODE_IDS)
coords = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
labels = st.sampled_from([None, "true", "false", "error"])


def op(workflow_id: UUID) -> st.SearchStrategy[Any]:
    """One command on `workflow_id`; some will be refused by invariants, as in real use."""
    w = workflow_id
    return st.one_of(
        st.builds(
            c.AddNode,
            workflow_id=st.just(w),
            node_type=st.sampled_from(["http.request", "data.transform", "trigger.manual"]),
            node_id=node_ids,
            x=coords,
            y=coords,
        ),
        st.builds(
            c.UpdateNode,
            workflow_id=st.just(w),
            node_id=node_ids,
            name=st.text("abcdef ", min_size=1, max_size=8).filter(str.strip),
            # Valid for every node type (an invalid one is refused, as the unit tests show).
            config=st.dictionaries(st.just("notes"), st.text("abc", max_size=4)),
        ),
        st.builds(c.MoveNode, workflow_id=st.just(w), node_id=node_ids, x=coords, y=coords),
        st.builds(c.RemoveNode, workflow_id=st.just(w), node_id=node_ids),
        st.builds(
            c.ConnectNodes,
            workflow_id=st.just(w),
            source_id=node_ids,
            target_id=node_ids,
            label=labels,
        ),
        st.builds(
            c.RenameWorkflow, workflow_id=st.just(w), name=st.text("xyz", min_size=1, max_size=5)
        ),
        st.builds(c.PublishWorkflow, workflow_id=st.just(w)),
    )


def disconnect_any(workflow_id: UUID, edge_ids: list[str], index: int) -> c.DisconnectNodes:
    return c.DisconnectNodes(workflow_id=workflow_id, edge_id=edge_ids[index % len(edge_ids)])


@st.composite
def loop_graphs(draw: st.DrawFn) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, Any]]]:
    """A graph from trigger `start` through loops and plain steps, every node reached: a tree
    of edges out of `start`, then edges anywhere (back to a loop, into or out of a body, from
    one body to another). A loop's edges may be labelled `body` or `error`, a step's `error`;
    one edge per pair of nodes."""
    names = ["start", *(f"n{i}" for i in range(draw(st.integers(1, 7))))]
    loop = {"type": "control.loop", "config": {"items": "{{ [1] }}"}}
    step = {"type": "data.transform", "config": {}}
    nodes: dict[str, dict[str, Any]] = {"start": {"type": "trigger.manual", "config": {}}}
    nodes.update((name, loop if draw(st.booleans()) else step) for name in names[1:])
    labels = {
        "control.loop": st.sampled_from([None, "body", "body", "error"]),
        "data.transform": st.sampled_from([None, None, "error"]),
        "trigger.manual": st.none(),
    }
    edges: dict[tuple[str, str], str | None] = {}
    for i, name in enumerate(names[1:], start=1):
        source = draw(st.sampled_from(names[:i]))
        edges[(source, name)] = draw(labels[nodes[source]["type"]])
    anywhere = st.tuples(st.sampled_from(names), st.sampled_from(names[1:]))
    for source, target in draw(st.lists(anywhere, max_size=10)):
        if (source, target) not in edges:
            edges[(source, target)] = draw(labels[nodes[source]["type"]])
    return nodes, [(source, target, label) for (source, target), label in edges.items()]
