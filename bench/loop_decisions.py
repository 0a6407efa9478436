"""The orchestrator's decisions for one long loop: a `control.loop` of n items, concurrency 10,
its children ending one at a time in order, on the Execution aggregate alone (no I/O). Each
child's end is a decision (record it, start the next item); their cost must grow with the
items once, not with the items run so far. Usage: `python -m bench.loop_decisions [n ...]`
(default 1000 4000 20000)."""

from __future__ import annotations

import sys
import time
from typing import Any
from uuid import uuid4

from bench.harness import host_line
from command_side.execution.aggregate import Execution
from command_side.execution.decide import LOOP_RULE


def _node(kind: str, **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": config}


def seconds_for(n: int) -> float:
    """Admission and every child's end of a loop of `n` items, in seconds."""
    execution = Execution(
        execution_id=uuid4(), workflow_id="w", workflow_version=1,
        nodes={
            "start": _node("trigger.manual"),
            "each": _node("control.loop", items="{{ inputs.rows }}", concurrency=10),
            "body": _node("data.transform", fields={"x": "{{ inputs.item }}"}),
        },
        edges=[
            {"source": "start", "target": "each"},
            {"source": "each", "target": "body", "label": "body"},
        ],
        start="start", inputs={"rows": list(range(n))}, actor_id="u", workspace_id="ws",
        loop_rule=LOOP_RULE,
    )  # fmt: skip
    began = time.perf_counter()
    execution.admit(0.0, "bench")
    for index in range(n):
        record = execution.children["each"][index]
        execution.child_finished(
            "each", 1, index, record["child_id"], "SUCCEEDED", {"x": index}, None, 1.0, "bench"
        )
        if index % 1000 == 0:
            execution.collect_events()  # as each save does
    elapsed = time.perf_counter() - began
    assert execution.status == "SUCCEEDED", execution.error
    return elapsed


def run() -> str:
    return f"loop decisions: {seconds_for(4000) * 1000:.0f} ms for 4,000 items"


def main() -> None:
    print(host_line())
    for n in [int(a) for a in sys.argv[1:]] or [1000, 4000, 20000]:
        took = seconds_for(n)
        print(f"loop of {n:>6} items: {took * 1000:8.0f} ms, {took / n * 1e6:6.1f} µs per item")


if __name__ == "__main__":
    main()
