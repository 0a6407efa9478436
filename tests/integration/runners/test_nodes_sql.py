"""sql.query against the real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.unit.runners.stepping import StepRunner
from tests.waiting import wait_until

#: Trust authentication ignores it; it is there to be kept out of outputs and errors.
PASSWORD = "pg-Secret-Pw-42"


def with_password(url: str, password: str = PASSWORD, user: str | None = None) -> str:
    parts = urlsplit(url)
    if parts.password and user is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        parts._replace(netloc=f"{user or parts.username or 'postgres'}:{password}@{host}")
    )


@pytest.fixture
def db(database_url: str) -> dict[str, dict[str, Any]]:
    return {"db": {"kind": "postgres", "url": with_password(database_url)}}


def query(steps: StepRunner, secrets: dict[str, dict[str, Any]], sql: str, *params: Any) -> Any:
    config = {"credential": "db", "query": sql, "parameters": list(params)}
    return steps.run("sql.query", config, secrets)


def test_rows_come_back_as_objects_with_json_values(steps: StepRunner, db: dict[str, Any]) -> None:
    output = query(
        steps,
        db,
        "SELECT %s::int AS n, 1.50::numeric AS price, 12::numeric AS whole,"
        " '2024-05-01T12:00:00Z'::timestamptz AS at, '2024-05-01'::date AS day,"
        " '00000000-0000-0000-0000-000000000001'::uuid AS id, '\\x00ff'::bytea AS raw,"
        " '{\"a\": [1]}'::jsonb AS doc, ARRAY[1, 2] AS arr, interval '2 minutes' AS wait,"
        " NULL AS nothing",
        7,
    )
    assert output["columns"] == [
        "n",
        "price",
        "whole",
        "at",
        "day",
        "id",
        "raw",
        "doc",
        "arr",
        "wait",
        "nothing",
    ]
    assert output["row_count"] == 1
    row = output["rows"][0]
    assert row["n"] == 7 and row["price"] == 1.5 and row["whole"] == 12
    assert row["at"].startswith("2024-05-01T") and row["day"] == "2024-05-01"
    assert row["id"] == "00000000-0000-0000-0000-000000000001"
    assert (row["raw"], row["doc"], row["arr"], row["wait"]) == ("AP8=", {"a": [1]}, [1, 2], 120.0)
    assert row["nothing"] is None
    json.dumps(output, allow_nan=False)


def test_statements_change_data_and_report_the_rows_they_touched(
    steps: StepRunner, db: dict[str, Any]
) -> None:
    created = query(steps, db, "CREATE TABLE orders (id int, doc jsonb)")
    assert created == {"rows": [], "row_count": 0, "columns": []}
    inserted = query(
        steps, db, "INSERT INTO orders VALUES (%s, %s), (%s, %s)", 1, {"a": 1}, 2, {"b": [2]}
    )
    assert inserted["row_count"] == 2 and inserted["rows"] == []
    found = query(steps, db, "SELECT id, doc FROM orders WHERE id = ANY(%s) ORDER BY id", [1, 2])
    assert found["rows"] == [{"id": 1, "doc": {"a": 1}}, {"id": 2, "doc": {"b": [2]}}]


def test_parameters_are_values_never_sql(steps: StepRunner, db: dict[str, Any]) -> None:
    hostile = "x'); DROP TABLE t; --"
    query(steps, db, "CREATE TABLE t (v text)")
    query(steps, db, "INSERT INTO t VALUES (%s)", hostile)
    assert query(steps, db, "SELECT v FROM t")["rows"] == [{"v": hostile}]


def test_a_percent_sign_needs_no_escaping_without_parameters(
    steps: StepRunner, db: dict[str, Any]
) -> None:
    assert query(steps, db, "SELECT 'a%' AS p")["rows"] == [{"p": "a%"}]


def test_a_bad_statement_is_a_final_sql_error(steps: StepRunner, db: dict[str, Any]) -> None:
    error = steps.fails("sql.query", {"credential": "db", "query": "SELEC 1"}, db)
    assert (error.type, error.retryable) == ("SqlError", False)
    assert "syntax error" in error.message and "[42601]" in error.message


def test_a_serialization_failure_is_retryable(steps: StepRunner, db: dict[str, Any]) -> None:
    sql = "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
    error = steps.fails("sql.query", {"credential": "db", "query": sql}, db)
    assert (error.type, error.retryable) == ("SqlError", True)
    assert "[40001]" in error.message


def test_the_password_never_shows_in_outputs(steps: StepRunner, db: dict[str, Any]) -> None:
    output = query(
        steps, db, "SELECT %s::text AS echoed, %s::text AS url", PASSWORD, db["db"]["url"]
    )
    assert output["rows"] == [{"echoed": "***", "url": "***"}]


def test_a_login_refused_is_final_and_its_message_has_no_password(
    steps: StepRunner, database_url: str
) -> None:
    url = with_password(database_url, user="no_such_role_x")
    secrets = {"db": {"kind": "postgres", "url": url}}
    error = steps.fails("sql.query", {"credential": "db", "query": "SELECT 1"}, secrets)
    assert (error.type, error.retryable) == ("SqlError", False)
    assert "no_such_role_x" in error.message
    assert PASSWORD not in error.message


def test_an_unreachable_server_is_a_retryable_sql_error(steps: StepRunner) -> None:
    secrets = {"db": {"kind": "postgres", "url": f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"}}
    error = steps.fails("sql.query", {"credential": "db", "query": "SELECT 1"}, secrets)
    assert (error.type, error.retryable) == ("SqlError", True)
    assert PASSWORD not in error.message


def test_a_statement_over_the_timeout_is_stopped(steps: StepRunner, db: dict[str, Any]) -> None:
    limited = steps.with_settings(sql_statement_timeout_s=0.2)
    started = time.monotonic()
    error = limited.fails("sql.query", {"credential": "db", "query": "SELECT pg_sleep(20)"}, db)
    assert (error.type, error.retryable) == ("SqlError", False)
    assert "statement timeout" in error.message
    assert time.monotonic() - started < 10


def test_cancelling_stops_the_running_statement(
    steps: StepRunner, db: dict[str, Any], database_url: str
) -> None:
    marker = "/* cancel-me */ SELECT pg_sleep(30)"
    with psycopg.connect(database_url, autocommit=True) as monitor:

        def running() -> bool:
            found = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = %s",
                [marker],
            ).fetchone()
            return bool(found and found[0])

        started_running = threading.Event()

        def watch_for_it() -> None:
            wait_until(running, 20, "the statement runs", every=0.05)
            started_running.set()

        watcher = threading.Thread(target=watch_for_it, daemon=True)
        watcher.start()
        steps.cancel_when(started_running)
        started = time.monotonic()
        error = steps.fails("sql.query", {"credential": "db", "query": marker}, db)
        watcher.join()
        assert error.type == "Cancelled"
        assert started_running.is_set()  # it was stopped while it ran, not before
        assert time.monotonic() - started < 20
        assert not running()


def test_a_cancelled_step_never_connects(steps: StepRunner) -> None:
    steps.cancelled.set()
    secrets = {"db": {"kind": "postgres", "url": "postgresql://u@127.0.0.1:1/db"}}
    error = steps.fails("sql.query", {"credential": "db", "query": "SELECT 1"}, secrets)
    assert error.type == "Cancelled"
