"""Shared renderings: one per event and selection, bounded in size; the fan-out's counters."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from web.graphql.fanout import LoopCounter, Plan, Renderings, Unshareable

VERSION = Plan(
    "workflowEvents", (("version", "version", int, False), ("t", None, "WorkflowEvent", False))
)
PAYLOAD = Plan("e", (("payload", "payload", lambda v: v, True),))


def test_an_event_is_rendered_once_per_selection_however_often_it_is_sent() -> None:
    renderings = Renderings()
    made: list[int] = []

    def make() -> SimpleNamespace:
        made.append(1)
        return SimpleNamespace(version=7, payload={"x": "ä"})

    texts = {renderings.text("w", 7, VERSION, make) for _ in range(500)}
    assert texts == {'{"data":{"workflowEvents":{"version":7,"t":"WorkflowEvent"}}}'}
    assert renderings.text("w", 7, PAYLOAD, make) == '{"data":{"e":{"payload":{"x":"\\u00e4"}}}}'
    assert len(made) == 2  # one per selection
    assert len(renderings) == 2


def test_renderings_drop_the_oldest_past_their_size() -> None:
    renderings = Renderings(max_chars=10_000)
    for version in range(1, 201):
        big = SimpleNamespace(payload="x" * 1_000)
        renderings.text("w", version, PAYLOAD, lambda big=big: big)
    assert 1 <= len(renderings) <= 10  # ~1 KB each
    made: list[int] = []
    renderings.text("w", 200, PAYLOAD, lambda: made.append(1) or big)  # the newest stayed
    assert made == []
    renderings.text("w", 1, PAYLOAD, lambda: made.append(1) or big)  # the oldest went
    assert made == [1]


def test_an_event_graphql_would_answer_with_an_error_is_not_shared() -> None:
    renderings = Renderings()
    with pytest.raises(Unshareable):  # null in a non-null field
        renderings.text("w", 1, VERSION, lambda: SimpleNamespace(version=None))
    with pytest.raises(Unshareable):  # a value the scalar refuses

        def refuse(value: Any) -> Any:
            raise ValueError("Int cannot represent non 32-bit signed integer value")

        plan = Plan("e", (("version", "version", refuse, False),))
        renderings.text("w", 2, plan, lambda: SimpleNamespace(version=2**40))
    assert renderings.text("w", 3, PAYLOAD, lambda: SimpleNamespace(payload=None)) == (
        '{"data":{"e":{"payload":null}}}'
    )
    assert len(renderings) == 1


def test_a_loop_counter_is_scraped_as_a_prometheus_counter() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("autoops_test_sends", "Sends", registry)
    for _ in range(3):
        counter.inc()
    text = generate_latest(registry).decode()
    assert "# TYPE autoops_test_sends_total counter" in text
    assert "autoops_test_sends_total 3.0" in text
