"""`bench.loop_decisions` drives a whole loop to its end (it measures something that ran)."""

from __future__ import annotations

from bench.loop_decisions import seconds_for


def test_the_benchmark_runs_a_loop_of_items_to_success() -> None:
    assert seconds_for(25) > 0  # it asserts the loop SUCCEEDED after its last child
