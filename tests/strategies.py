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
