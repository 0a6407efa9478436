"""The step floor benchmark passes every task round its bare orchestrator and runner, and the
orchestrator commits each before it sends the next (a small run; the figures are the
benchmark's, not the test's)."""

from __future__ import annotations

import psycopg

from bench.step_floor import measure_floor


def test_the_step_floor_commits_every_step_and_measures_every_gap(
    database_url: str, kafka_bootstrap: str
) -> None:
    floor = measure_floor(kafka_bootstrap, database_url, fetch_wait_ms=10, steps=5)
    assert len(floor.gaps_ms) == 5
    assert all(gap > 0 for gap in floor.gaps_ms)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), min(step), max(step) FROM bench_floor_steps"
        ).fetchone()
    # Steps 0 … 26: the first result, 20 warm-up steps, the 5 measured and the last answer.
    assert row == (27, 0, 26)
    assert "step → step p50" in floor.line()
