"""Projections on real PostgreSQL: exactly-once under redelivery, replay equals incremental,
and the read model equals the aggregate folded from the store."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from command_side.bus import CommandBus
from command_side.contracts.log import EventLog
from command_side.errors import CommandError
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from infra.settings import eventsourcing_env_for
from projections.applier import Applier, create_tables, drop_tables
from projections.registry import PROJECTIONS
from projections.replay import UnknownProjection, rebuild, select
from tests.readmodel import snapshot
from tests.strategies import op

WID = UUID("00000000-0000-0000-0000-0000000000b1")


def all_envelopes(database_url: str) -> list[dict[str, Any]]:
    log = EventLog(eventsourcing_env_for(database_url))
    try:
        return [e for batch in log.read(batch=50) for e in batch]
    finally:
        log.close()


async def apply_with_redelivery(
    database_url: str, envelopes: list[dict[str, Any]], seed: int
) -> Applier:
    """Apply in random batches, redelivering random earlier stretches as Kafka may."""
    rng = random.Random(seed)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await create_tables(conn, PROJECTIONS.values())
        await conn.commit()
        async with conn.transaction():
            await drop_tables(conn, PROJECTIONS.values())
        applier = Applier(conn)
        await applier.setup()
        i = 0
        while i < len(envelopes):
            size = rng.randint(1, 7)
            start = max(0, i - rng.randint(0, 5)) if rng.random() < 0.3 else i
            await applier.apply(envelopes[start : i + size])
            i += size
        return applier


def read_graph(database_url: str, workflow_id: UUID) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        name, version = conn.execute(
            "SELECT name, version FROM read.workflows WHERE id = %s", (workflow_id,)
        ).fetchone()
        nodes = {
            r[0]: {"type": r[1], "name": r[2], "config": r[3], "x": r[4], "y": r[5]}
            for r in conn.execute(
                "SELECT node_id, type, name, config, x, y FROM "
                "read.workflow_nodes WHERE workflow_id = %s",
                (workflow_id,),
            )
        }
        edges = {
            r[0]: {"source": r[1], "target": r[2], "label": r[3], "condition": r[4]}
            for r in conn.execute(
                "SELECT edge_id, source_id, target_id, label, condition "
                "FROM read.workflow_edges WHERE workflow_id = %s",
                (workflow_id,),
            )
        }
    return {"name": name, "version": version, "nodes": nodes, "edges": edges}


@given(st.lists(op(WID), min_size=1, max_size=30), st.integers(0, 10_000))
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_read_model_equals_the_aggregate_and_replay_equals_incremental(
    database_url: str, ops: list[Any], seed: int
) -> None:
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE workflow_events")
    bus = CommandBus(store)
    bus.start()
    meta = c.Meta(actor_id="u", workspace_id="ws", client_op_id=f"create-{seed}")
    try:
        created = bus.execute(c.CreateWorkflow(name="w"), meta)
        ops = [type(o)(**{**o.__dict__, "workflow_id": created.workflow_id}) for o in ops]
        for command in ops:
            with contextlib.suppress(CommandError):
                bus.execute(command, c.Meta(actor_id="u", workspace_id="ws"))
    finally:
        bus.stop()
    envelopes = all_envelopes(database_url)
    applier = asyncio.run(apply_with_redelivery(database_url, envelopes, seed))
    workflow_projections = [p for p in PROJECTIONS.values() if p.context == "workflow"]
    assert applier.applied == len(envelopes) * len(workflow_projections)
    incremental = snapshot(database_url)

    aggregate = store.load(created.workflow_id).graph()
    stored = read_graph(database_url, created.workflow_id)
    assert stored == {k: aggregate[k] for k in ("name", "version", "nodes", "edges")}

    summary = asyncio.run(rebuild(database_url, eventsourcing_env_for(database_url)))
    assert summary.events == len(envelopes)
    assert snapshot(database_url) == incremental
    store.close()


def test_replay_of_one_projection_leaves_the_others_alone(database_url: str) -> None:
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    bus = CommandBus(store)
    bus.start()
    wid = bus.execute(
        c.CreateWorkflow(name="w"), c.Meta(actor_id="u", workspace_id="ws")
    ).workflow_id
    bus.execute(
        c.AddNode(workflow_id=wid, node_type="data.transform"),
        c.Meta(actor_id="u", workspace_id="ws"),
    )
    bus.stop()
    env = eventsourcing_env_for(database_url)
    asyncio.run(rebuild(database_url, env))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM read.workflow_history WHERE version = 2")
    summary = asyncio.run(rebuild(database_url, env, ["workflow_history"]))
    assert summary.projections == ("workflow_history",) and summary.events == 2
    assert len(snapshot(database_url)["history"]) == 2
    with pytest.raises(UnknownProjection):
        select(["nope"])


@given(
    st.lists(op(WID), min_size=1, max_size=15),
    st.lists(op(WID), min_size=1, max_size=15),
)
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_concurrent_writers_end_with_the_read_model_of_the_folded_aggregate(
    database_url: str, first_ops: list[Any], second_ops: list[Any]
) -> None:
    """Two writers (two stores and buses, as two api processes) race on one workflow."""
    env = eventsourcing_env_for(database_url)
    stores = [WorkflowStore(env=env), WorkflowStore(env=env)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE workflow_events")
    buses = [CommandBus(s) for s in stores]
    for bus in buses:
        bus.start()
    meta = c.Meta(actor_id="u", workspace_id="ws")
    created = buses[0].execute(c.CreateWorkflow(name="w"), meta)

    def run(bus: CommandBus, ops: list[Any]) -> None:
        for command in ops:
            command = type(command)(**{**command.__dict__, "workflow_id": created.workflow_id})
            with contextlib.suppress(CommandError):
                bus.execute(command, meta)

    writers = [
        threading.Thread(target=run, args=(bus, ops))
        for bus, ops in zip(buses, (first_ops, second_ops), strict=True)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    for bus in buses:
        bus.stop()
    asyncio.run(apply_with_redelivery(database_url, all_envelopes(database_url), seed=1))
    aggregate = stores[0].load(created.workflow_id).graph()
    stored = read_graph(database_url, created.workflow_id)
    assert stored == {k: aggregate[k] for k in ("name", "version", "nodes", "edges")}
    for s in stores:
        s.close()


def test_the_log_finds_where_a_time_starts_by_bisection(database_url: str) -> None:
    """What revocations are rebuilt from at every api start: the events since a time, not
    the whole log. Every event at or after the time is read; none far before it."""
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    bus = CommandBus(store)
    bus.start()
    try:
        for n in range(40):
            bus.execute(c.CreateWorkflow(name=f"w{n}"), c.Meta(actor_id="u", workspace_id="ws"))
    finally:
        bus.stop()
        store.close()
    envelopes = all_envelopes(database_url)
    log = EventLog(eventsourcing_env_for(database_url))
    try:

        def stored_at(envelope: dict[str, Any]) -> float:
            return datetime.fromisoformat(envelope["occurred_at"]).timestamp()

        for k in (0, 1, 17, 39):
            at = stored_at(envelopes[k])
            after = log.position_before(at)
            read = [e["position"] for batch in log.read(after=after) for e in batch]
            assert read == [e["position"] for e in envelopes if stored_at(e) >= at]
        assert log.position_before(stored_at(envelopes[-1]) + 1) == envelopes[-1]["position"]
    finally:
        log.close()
