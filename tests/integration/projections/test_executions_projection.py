"""The executions read models on real PostgreSQL, folded from hand-built envelopes of every
event type of docs/execution.md: what each event leaves in `read.executions`,
`read.execution_steps` and `read.credentials`, idempotence under redelivery, and row-level
security."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from projections.applier import Applier, ensure_read_models
from projections.registry import PROJECTIONS
from projections.schema import READER_ROLE

Envelope = dict[str, Any]

WS = "11111111-1111-1111-1111-111111111111"
OTHER_WS = "22222222-2222-2222-2222-222222222222"
WORKFLOW = "33333333-3333-3333-3333-333333333333"
RUN = UUID("00000000-0000-0000-0000-0000000000a1")
CHILD = UUID("00000000-0000-0000-0000-0000000000a2")
CHILD_2 = UUID("00000000-0000-0000-0000-0000000000a3")
EARLIER = UUID("00000000-0000-0000-0000-0000000000a0")
API_KEY = uuid5(UUID(WS), "api")
DB_KEY = uuid5(UUID(WS), "db")
FOREIGN_KEY = uuid5(UUID(OTHER_WS), "api")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EXECUTION_TABLES = (
    "read.executions",
    "read.execution_steps",
    "read.credentials",
    "read.variables",
)
VARIABLES = uuid5(UUID(WS), "variables")
FOREIGN_VARIABLES = uuid5(UUID(OTHER_WS), "variables")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def envelope(
    aggregate_id: UUID,
    version: int,
    kind: str,
    data: dict[str, Any] | None = None,
    seconds: float = 0.0,
    workspace_id: str = WS,
) -> Envelope:
    """A public envelope as the relay publishes it (private fields already stripped)."""
    return {
        "event_id": str(uuid5(aggregate_id, str(version))),
        "type": f"execution.{kind}",
        "schema_version": 1,
        "aggregate_id": str(aggregate_id),
        "aggregate_version": version,
        "position": 0,
        "occurred_at": at(seconds).isoformat(),
        "workspace_id": workspace_id,
        "actor_id": "user-1",
        "data": data or {},
    }


NODES = {
    "start": {"type": "trigger.manual", "config": {}},
    "fetch": {"type": "http.request", "config": {"url": "https://example.com"}},
    "check": {"type": "logic.if", "config": {}},
    "later": {"type": "data.transform", "config": {}},
    "old": {"type": "data.transform", "config": {}},
    "each": {"type": "flow.loop", "config": {}},
}


def started(
    execution_id: UUID,
    seconds: float = 0.0,
    workspace_id: str = WS,
    workflow_id: str = WORKFLOW,
    **data: Any,
) -> Envelope:
    return envelope(
        execution_id,
        1,
        "ExecutionStarted",
        {
            "execution_id": str(execution_id),
            "workflow_id": workflow_id,
            "workflow_version": 3,
            "nodes": NODES,
            "edges": [{"source": "start", "target": "fetch", "label": None}],
            "start": "start",
            "inputs": {"n": 2},
            "vars": {},
            "trigger": {"kind": "manual"},
            "parent": None,
            "retry_of": None,
            "reused": {},
            "max_concurrency": None,
            "timeout_s": None,
            **data,
        },
        seconds,
        workspace_id,
    )


def run_story() -> list[Envelope]:
    """One execution through every event type: a reused step, a failed then retried step
    (the retry waiting for its backoff), a branch, a skip, a loop with two children, and a
    final failure."""
    e = RUN
    epoch = T0.timestamp()
    events: list[tuple[str, dict[str, Any]]] = [
        ("ExecutionAdmitted", {}),
        ("StepReused", {"node_id": "old", "output": {"v": 1}, "branch": None,
                        "from_execution": str(EARLIER)}),
        ("StepScheduled", {"node_id": "fetch", "node_type": "http.request", "attempt": 1,
                           "not_before": epoch + 3, "input": {"url": "https://example.com"},
                           "pool": "default", "started": True}),
        ("StepFailed", {"node_id": "fetch", "attempt": 1, "error_type": "HttpStatusError",
                        "message": "GET https://example.com answered 503", "retryable": True,
                        "final": False, "runner_id": "host:1", "started_at": epoch + 3.5,
                        "finished_at": epoch + 3.75}),
        ("StepScheduled", {"node_id": "fetch", "node_type": "http.request", "attempt": 2,
                           "not_before": epoch + 60, "input": None, "pool": None,
                           "started": False}),
        ("StepHeartbeat", {"node_id": "fetch", "attempt": 2}),  # unknown here: version only
        ("StepDispatched", {"node_id": "fetch", "attempt": 2}),
        ("StepSucceeded", {"node_id": "fetch", "attempt": 2, "output": {"status": 200},
                           "branch": None, "runner_id": "host:2", "started_at": epoch + 60.5,
                           "finished_at": epoch + 61}),
        ("StepScheduled", {"node_id": "check", "node_type": "logic.if", "attempt": 1,
                           "not_before": epoch + 61, "input": {}, "pool": None}),
        ("StepSucceeded", {"node_id": "check", "attempt": 1, "output": True, "branch": "true",
                           "runner_id": None, "started_at": None, "finished_at": None}),
        ("StepSkipped", {"node_id": "later"}),
        ("StepScheduled", {"node_id": "each", "node_type": "flow.loop", "attempt": 1,
                           "not_before": epoch + 62, "input": {"items": [1, 2]}, "pool": None}),
        ("ChildStarted", {"node_id": "each", "attempt": 1, "index": 0, "child_id": str(CHILD)}),
        ("ChildStarted", {"node_id": "each", "attempt": 1, "index": 1,
                          "child_id": str(CHILD_2)}),
        ("ChildFinished", {"node_id": "each", "attempt": 1, "index": 0, "child_id": str(CHILD),
                           "status": "SUCCEEDED", "output": {"x": 1}, "error": None}),
        ("ChildFinished", {"node_id": "each", "attempt": 1, "index": 1,
                           "child_id": str(CHILD_2), "status": "FAILED", "output": None,
                           "error": "each: boom"}),
        ("StepFailed", {"node_id": "each", "attempt": 1, "error_type": "ChildFailed",
                        "message": "item 1 failed", "retryable": False, "final": True,
                        "runner_id": None, "started_at": None, "finished_at": None}),
        ("ExecutionFinished", {"status": "FAILED", "error": "each: item 1 failed",
                               "output": None}),
    ]  # fmt: skip
    seconds = [1, 2, 3, 4, 4.5, 59, 60, 61.1, 61.15, 61.2, 61.3, 62, 62.1, 62.2, 63, 64, 64.5, 65]
    return [started(e, retry_of=str(EARLIER))] + [
        envelope(e, version, kind, data, s)
        for version, ((kind, data), s) in enumerate(zip(events, seconds, strict=True), start=2)
    ]


def child_story() -> list[Envelope]:
    parent = {"execution_id": str(RUN), "node_id": "each", "index": 0}
    return [
        started(CHILD, 62.1, trigger={"kind": "loop"}, parent=parent),
        envelope(CHILD, 2, "ExecutionAdmitted", {}, 62.15),
        envelope(CHILD, 3, "ExecutionFinished", {"status": "SUCCEEDED", "error": None,
                                                  "output": {"x": 1}}, 62.9),
    ]  # fmt: skip


def credential_story() -> list[Envelope]:
    return [
        envelope(API_KEY, 1, "CredentialCreated", {"name": "api", "kind": "http_bearer"}, 0.5),
        envelope(DB_KEY, 1, "CredentialCreated", {"name": "db", "kind": "postgres"}, 0.6),
        envelope(DB_KEY, 2, "CredentialDeleted", {}, 0.7),
        envelope(
            FOREIGN_KEY, 1, "CredentialCreated", {"name": "api", "kind": "openai"}, 0.8, OTHER_WS
        ),
    ]


def variable_story() -> list[Envelope]:
    return [
        envelope(VARIABLES, 1, "VariablesCreated", {}, 1.0),
        envelope(VARIABLES, 2, "VariableSet", {"name": "region", "value": "eu"}, 1.1),
        envelope(VARIABLES, 3, "VariableSet", {"name": "limits", "value": {"max": 3}}, 1.2),
        envelope(VARIABLES, 4, "VariableDeleted", {"name": "limits"}, 1.3),
        envelope(VARIABLES, 5, "VariableSet", {"name": "region", "value": "us"}, 1.4),
        envelope(FOREIGN_VARIABLES, 1, "VariablesCreated", {}, 1.5, OTHER_WS),
        envelope(
            FOREIGN_VARIABLES, 2, "VariableSet", {"name": "region", "value": 7}, 1.6, OTHER_WS
        ),
    ]


def foreign_story() -> list[Envelope]:
    other = UUID("00000000-0000-0000-0000-0000000000b1")
    return [started(other, 5, OTHER_WS), envelope(other, 2, "ExecutionAdmitted", {}, 6, OTHER_WS)]


def all_stories() -> list[Envelope]:
    return run_story() + child_story() + credential_story() + variable_story() + foreign_story()


def fold(database_url: str, *batches: list[Envelope]) -> None:
    """Each batch straight to the fold function, bypassing the tracking table."""
    asyncio.run(ensure_read_models(database_url))
    with psycopg.connect(database_url) as conn:
        for batch in batches:
            conn.execute("SELECT read.apply_executions(%s)", (Jsonb(batch),))


def apply(database_url: str, envelopes: list[Envelope], seed: int) -> None:
    """Through the projector's applier, in random batches with redeliveries."""
    rng = random.Random(seed)

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            applier = Applier(conn, [PROJECTIONS["executions"]])
            await applier.setup()
            i = 0
            while i < len(envelopes):
                size = rng.randint(1, 6)
                start = max(0, i - rng.randint(1, 4)) if rng.random() < 0.4 else i
                await applier.apply(envelopes[start : i + size])
                i += size

    asyncio.run(run())


def rows(database_url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def snapshot(database_url: str) -> dict[str, list[dict[str, Any]]]:
    order = {
        "read.executions": "id",
        "read.execution_steps": "execution_id, node_id, attempt",
        "read.credentials": "id",
        "read.variables": "workspace_id, name",
    }
    return {t: rows(database_url, f"SELECT * FROM {t} ORDER BY {o}") for t, o in order.items()}


def steps(database_url: str, execution_id: UUID) -> dict[tuple[str, int], dict[str, Any]]:
    found = rows(
        database_url, "SELECT * FROM read.execution_steps WHERE execution_id = %s", execution_id
    )
    return {(r["node_id"], r["attempt"]): r for r in found}


def test_an_execution_row_follows_start_admission_and_finish(database_url: str) -> None:
    fold(database_url, all_stories())
    (run,) = rows(database_url, "SELECT * FROM read.executions WHERE id = %s", RUN)
    assert run["workspace_id"] == WS and run["workflow_id"] == WORKFLOW
    assert run["workflow_version"] == 3 and run["status"] == "FAILED"
    assert run["trigger"] == {"kind": "manual"} and run["inputs"] == {"n": 2}
    assert run["retry_of"] == EARLIER and run["parent_id"] is None
    assert (run["created_at"], run["started_at"], run["finished_at"]) == (at(0), at(1), at(65))
    assert run["error"] == "each: item 1 failed" and run["output"] is None
    assert run["version"] == len(run_story()) and run["updated_at"] == at(65)
    (child,) = rows(database_url, "SELECT * FROM read.executions WHERE id = %s", CHILD)
    assert child["parent_id"] == RUN and child["trigger"] == {"kind": "loop"}
    assert (child["status"], child["output"], child["error"]) == ("SUCCEEDED", {"x": 1}, None)


def test_a_queued_execution_has_no_start_or_end_yet(database_url: str) -> None:
    fold(database_url, [started(RUN)])
    (run,) = rows(database_url, "SELECT * FROM read.executions")
    assert (run["status"], run["started_at"], run["finished_at"]) == ("QUEUED", None, None)
    fold(database_url, [envelope(RUN, 2, "ExecutionAdmitted", {}, 1)])
    (run,) = rows(database_url, "SELECT * FROM read.executions")
    assert (run["status"], run["started_at"], run["version"]) == ("RUNNING", at(1), 2)


def test_absent_optional_fields_leave_defaults_not_a_stuck_projector(database_url: str) -> None:
    fold(
        database_url,
        [
            started(RUN, trigger=None, inputs=None, parent=None, retry_of=None),
            envelope(RUN, 2, "ExecutionAdmitted", {}, 1),
            envelope(RUN, 3, "StepReused", {"node_id": "old", "output": None, "branch": None,
                                            "from_execution": ""}, 2),
        ],
    )  # fmt: skip
    (run,) = rows(database_url, "SELECT trigger, inputs, retry_of FROM read.executions")
    assert run == {"trigger": {"kind": "manual"}, "inputs": {}, "retry_of": None}
    reused = steps(database_url, RUN)[("old", 0)]
    assert (reused["output"], reused["reused_from"]) == (None, None)


def test_each_attempt_of_a_step_is_a_row_with_its_runner_times_and_error(
    database_url: str,
) -> None:
    fold(database_url, run_story())
    found = steps(database_url, RUN)
    assert sorted(found) == [
        ("check", 1), ("each", 1), ("fetch", 1), ("fetch", 2), ("later", 0), ("old", 0)
    ]  # fmt: skip
    failed = found[("fetch", 1)]
    assert failed["status"] == "failed" and failed["node_type"] == "http.request"
    assert failed["error"] == {
        "type": "HttpStatusError",
        "message": "GET https://example.com answered 503",
        "retryable": True,
    }
    assert (failed["started_at"], failed["finished_at"]) == (at(3.5), at(3.75))
    assert failed["runner_id"] == "host:1" and failed["input"] == {"url": "https://example.com"}
    retried = found[("fetch", 2)]
    assert retried["status"] == "succeeded" and retried["output"] == {"status": 200}
    assert (retried["scheduled_at"], retried["not_before"]) == (at(4.5), at(60))
    assert (retried["started_at"], retried["finished_at"]) == (at(60.5), at(61))
    assert retried["error"] is None and retried["runner_id"] == "host:2"
    branch = found[("check", 1)]
    assert (branch["status"], branch["output"], branch["branch"]) == ("succeeded", True, "true")
    assert branch["started_at"] is None and branch["finished_at"] == at(61.2)  # event time
    skipped = found[("later", 0)]
    assert (skipped["status"], skipped["node_type"]) == ("skipped", "data.transform")
    reused = found[("old", 0)]
    assert (reused["status"], reused["output"], reused["reused_from"]) == (
        "reused",
        {"v": 1},
        EARLIER,
    )
    loop = found[("each", 1)]
    assert loop["status"] == "failed" and loop["error"]["retryable"] is False


def test_a_step_waiting_for_its_time_is_scheduled_until_dispatched(database_url: str) -> None:
    story = run_story()
    fold(database_url, story[:6])  # fetch attempt 2 scheduled for later
    assert steps(database_url, RUN)[("fetch", 2)]["status"] == "scheduled"
    assert steps(database_url, RUN)[("fetch", 1)]["status"] == "failed"
    fold(database_url, story[6:8])
    assert steps(database_url, RUN)[("fetch", 2)]["status"] == "running"


def test_a_step_due_past_the_last_timestamp_is_scheduled_without_a_time(
    database_url: str,
) -> None:
    """A delay of 1e300 s is a valid config: its step is folded (no time), not a batch that
    fails for ever."""
    far = envelope(
        RUN, 3, "StepScheduled",
        {"node_id": "wait", "node_type": "control.delay", "attempt": 1, "not_before": 1e300,
         "input": {"seconds": 1e300}, "pool": None, "started": False},
        seconds=2,
    )  # fmt: skip
    fold(database_url, [*run_story()[:2], far])
    wait = steps(database_url, RUN)[("wait", 1)]
    assert (wait["status"], wait["not_before"]) == ("scheduled", None)


def test_a_step_due_at_once_is_running(database_url: str) -> None:
    story = run_story()
    fold(database_url, story[:4])
    assert steps(database_url, RUN)[("fetch", 1)]["status"] == "running"


def test_the_started_flag_decides_over_the_time(database_url: str) -> None:
    due = T0.timestamp()
    fold(database_url, [started(RUN)])
    fold(database_url, [
        envelope(RUN, 2, "StepScheduled", {"node_id": "fetch", "node_type": "http.request",
                 "attempt": 1, "not_before": due, "input": None, "pool": None,
                 "started": False}, 5),
        envelope(RUN, 3, "StepScheduled", {"node_id": "check", "node_type": "logic.if",
                 "attempt": 1, "not_before": due + 60, "input": {}, "pool": None,
                 "started": True}, 6),
    ])  # fmt: skip
    found = steps(database_url, RUN)
    assert found[("fetch", 1)]["status"] == "scheduled"
    assert found[("check", 1)]["status"] == "running"


def test_a_loop_step_lists_its_children_and_how_they_ended(database_url: str) -> None:
    story = run_story()
    fold(database_url, story[:15])
    loop = steps(database_url, RUN)[("each", 1)]
    assert loop["status"] == "running"
    assert loop["children"] == [
        {"child_id": str(CHILD), "index": 0, "status": None, "error": None},
        {"child_id": str(CHILD_2), "index": 1, "status": None, "error": None},
    ]
    fold(database_url, story[15:])
    assert steps(database_url, RUN)[("each", 1)]["children"] == [
        {"child_id": str(CHILD), "index": 0, "status": "SUCCEEDED", "error": None},
        {"child_id": str(CHILD_2), "index": 1, "status": "FAILED", "error": "each: boom"},
    ]


def test_credentials_keep_names_and_kinds_and_go_when_deleted(database_url: str) -> None:
    fold(database_url, credential_story())
    found = rows(
        database_url,
        "SELECT id, workspace_id, name, kind, created_at, created_by FROM read.credentials"
        " ORDER BY workspace_id, name",
    )
    assert found == [
        {"id": API_KEY, "workspace_id": WS, "name": "api", "kind": "http_bearer",
         "created_at": at(0.5), "created_by": "user-1"},
        {"id": FOREIGN_KEY, "workspace_id": OTHER_WS, "name": "api", "kind": "openai",
         "created_at": at(0.8), "created_by": "user-1"},
    ]  # fmt: skip


def test_a_replaced_credential_keeps_its_name_with_the_new_kind(database_url: str) -> None:
    rotated = envelope(API_KEY, 2, "CredentialReplaced", {"name": "api", "kind": "http_header"}, 8)
    taken_again = envelope(DB_KEY, 3, "CredentialReplaced", {"name": "db", "kind": "http_basic"}, 9)
    fold(database_url, credential_story(), [rotated, taken_again])
    found = rows(
        database_url,
        "SELECT name, kind, created_at FROM read.credentials WHERE workspace_id = %s ORDER BY name",
        WS,
    )
    assert found == [
        {"name": "api", "kind": "http_header", "created_at": at(0.5)},
        {"name": "db", "kind": "http_basic", "created_at": at(9)},
    ]


def test_variables_keep_their_latest_value_and_stay_deleted(database_url: str) -> None:
    story = variable_story()
    fold(database_url, story, [story[2]])  # `limits` set again by a redelivery: still gone
    found = rows(
        database_url,
        "SELECT workspace_id, name, value, deleted, updated_at FROM read.variables"
        " ORDER BY workspace_id, name",
    )
    assert found == [
        {"workspace_id": WS, "name": "limits", "value": None, "deleted": True,
         "updated_at": at(1.3)},
        {"workspace_id": WS, "name": "region", "value": "us", "deleted": False,
         "updated_at": at(1.4)},
        {"workspace_id": OTHER_WS, "name": "region", "value": 7, "deleted": False,
         "updated_at": at(1.6)},
    ]  # fmt: skip


def test_the_fold_ignores_events_redelivered_or_older_than_the_row(database_url: str) -> None:
    story = all_stories()
    fold(database_url, story)
    once = snapshot(database_url)
    fold(database_url, story)  # the whole stream again
    assert snapshot(database_url) == once
    run = run_story()
    fold(database_url, run[1:6], [run[2], run[9]], run[:3])  # stale events, out of order
    assert snapshot(database_url) == once


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_batches_with_redelivery_build_the_same_read_model(
    database_url: str, seed: int
) -> None:
    story = all_stories()
    apply(database_url, story, seed)
    applied = snapshot(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in EXECUTION_TABLES:
            conn.execute(f"TRUNCATE {table}")
    fold(database_url, story)
    assert snapshot(database_url) == applied


def test_a_reader_sees_only_its_own_workspace(database_url: str) -> None:
    fold(database_url, all_stories())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {READER_ROLE}")
        for workspace, expected in ((WS, {WS}), (OTHER_WS, {OTHER_WS}), ("", set())):
            with conn.transaction():
                conn.execute("SELECT set_config('autoops.workspace_id', %s, true)", (workspace,))
                for table in EXECUTION_TABLES:
                    seen = conn.execute(f"SELECT DISTINCT workspace_id FROM {table}").fetchall()
                    if table == "read.execution_steps" and workspace == OTHER_WS:
                        assert seen == [], table  # the foreign execution ran no step
                    else:
                        assert {r[0] for r in seen} == expected, (table, workspace)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("DELETE FROM read.credentials")
