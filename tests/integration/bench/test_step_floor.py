"""The step floor benchmark passes every task round its bare orchestrator and runner and
commits each step (a small run; the figures are the benchmark's, not the test's), and a side
that fails says why at once instead of running into a timeout."""

from __future__ import annotations

import psycopg
import pytest

from bench.step_floor import WARM_UP, measure_floor


def test_the_step_floor_commits_every_step_and_measures_every_gap(
    database_url: str, kafka_bootstrap: str
) -> None:
    floor = measure_floor(kafka_bootstrap, database_url, fetch_wait_ms=10, steps=5)
    assert len(floor.gaps_ms) == 5
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT run), count(*), min(step), max(step) FROM bench_floor_steps"
        ).fetchone()
    # Results 0 … last: the kick-off, then one for each task the runner took (WARM_UP + 5
    # gaps need WARM_UP + 6 tasks).
    last = WARM_UP + 6
    assert row == (1, last + 1, 0, last)


def test_a_side_that_fails_is_reported_with_its_cause(
    database_url: str, kafka_bootstrap: str
) -> None:
    missing = database_url.rsplit("/", 1)[0] + "/no_such_database"
    # Not a TimeoutError after START_TIMEOUT_S: the orchestrator's own error, traceback and all.
    with pytest.raises(RuntimeError, match=r"(?s)a side of the floor failed.*no_such_database"):
        measure_floor(kafka_bootstrap, missing, fetch_wait_ms=10, steps=5)
