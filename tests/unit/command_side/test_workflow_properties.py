"""Property tests: any editing session keeps the graph sound and folds back to the same state."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from command_side.errors import CommandError
from command_side.workflow import handlers
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from tests.strategies import op

WID = UUID("00000000-0000-0000-0000-00000000000a")
META = Meta(actor_id="u", workspace_id="ws")


def run_session(ops: list[Any], disconnects: list[int]) -> tuple[Workflow, list[Any]]:
    w = Workflow.create(WID, "start", "", META)
    events = list(w.collect_events())
    for i, command in enumerate(ops):
        with contextlib.suppress(CommandError):
            handlers.apply(w, command, META)
        if disconnects and w.edges and i % 3 == 0:
            edge = sorted(w.edges)[disconnects[i % len(disconnects)] % len(w.edges)]
            w.disconnect(edge, META)
        events.extend(w.collect_events())
    return w, events


@given(st.lists(op(WID), max_size=40), st.lists(st.integers(0, 50), max_size=5))
@settings(max_examples=150, deadline=None)
def test_folding_the_events_rebuilds_the_same_workflow(ops: list[Any], dis: list[int]) -> None:
    live, events = run_session(ops, dis)
    folded = None
    for event in events:
        folded = event.mutate(folded)
    assert folded is not None
    assert folded.graph() == live.graph()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))


@given(st.lists(op(WID), max_size=40), st.lists(st.integers(0, 50), max_size=5))
@settings(max_examples=150, deadline=None)
def test_the_graph_stays_sound(ops: list[Any], dis: list[int]) -> None:
    w, _ = run_session(ops, dis)
    triples = set()
    for edge in w.edges.values():
        assert edge["source"] in w.nodes and edge["target"] in w.nodes
        assert edge["source"] != edge["target"]
        triple = (edge["source"], edge["target"], edge["label"])
        assert triple not in triples
        triples.add(triple)
    assert [p["number"] for p in w.published] == list(range(1, len(w.published) + 1))
