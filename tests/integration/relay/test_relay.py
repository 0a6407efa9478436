"""The relay against real PostgreSQL and Tansu: envelopes, keys, position, broker loss."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import jsonschema
import pytest

from command_side.bus import CommandBus
from command_side.contracts.schemas import schema_for
from command_side.relay import Relay, RelayConfig
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow.commands import Meta
from infra import embedded
from infra.settings import eventsourcing_env_for
from tests.kafka_read import read_topic

META = Meta(actor_id="alice", workspace_id="ws1")
TOPIC = "autoops.workflow.events"


@pytest.fixture
def store(database_url: str) -> WorkflowStore:
    return WorkflowStore(env=eventsourcing_env_for(database_url))


@pytest.fixture
def broker() -> Iterator[embedded.Service]:
    service = embedded.start_tansu()
    yield service
    service.stop()


def relay_config(
    database_url: str, broker: embedded.Service, poll_interval_s: float = 0.2, **extra: Any
) -> RelayConfig:
    return RelayConfig(
        context="workflow",
        database_url=database_url,
        bootstrap=broker.url,
        partitions=4,
        poll_interval_s=poll_interval_s,
        **extra,
    )


def start_relay(
    store: WorkflowStore, config: RelayConfig
) -> tuple[Relay, threading.Event, threading.Thread]:
    relay = Relay(store, config)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return relay, stop, thread


def edit_some(store: WorkflowStore, n: int) -> str:
    bus = CommandBus(store)
    bus.start()
    try:
        wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
        for i in range(n):
            bus.execute(c.AddNode(workflow_id=wid, node_type="http.request", name=f"n{i}"), META)
        return str(wid)
    finally:
        bus.stop()


def test_every_event_reaches_kafka_as_a_valid_envelope_keyed_by_aggregate(
    store: WorkflowStore, database_url: str, broker: embedded.Service
) -> None:
    config = relay_config(database_url, broker)
    wid = edit_some(store, 20)
    _, stop, thread = start_relay(store, config)
    try:
        messages = read_topic(broker.url, TOPIC, 21)
    finally:
        stop.set()
        thread.join(10)
    assert len(messages) == 21
    assert {m["_key"] for m in messages} == {wid}
    assert [m["aggregate_version"] for m in messages] == list(range(1, 22))
    for m in messages:
        m.pop("_key")
        assert m.pop("_headers") == {"type": m["type"]}  # consumers may filter on it
        jsonschema.validate(m, schema_for(m["type"]))
        assert m["actor_id"] == "alice" and m["workspace_id"] == "ws1"


def test_a_commit_made_while_a_batch_goes_out_wakes_the_relay(
    store: WorkflowStore, database_url: str, broker: embedded.Service
) -> None:
    """After a batch the relay waits for the next NOTIFY without querying again: the one a
    commit sends while the relay is busy publishing must still wake it (no poll to fall
    back on here)."""
    wid = edit_some(store, 0)
    config = relay_config(database_url, broker, poll_interval_s=60.0)

    class EditsMidBatch(Relay):
        edited = False

        def _save_position(self, conn: Any, position: int, published: int) -> None:
            if not self.edited:  # the first batch is out, its position not yet saved
                self.edited = True
                bus = CommandBus(store)
                bus.start()
                try:
                    bus.execute(
                        c.AddNode(workflow_id=UUID(wid), node_type="http.request", name="late"),
                        META,
                    )
                finally:
                    bus.stop()
            super()._save_position(conn, position, published)

    relay = EditsMidBatch(store, config)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        messages = read_topic(broker.url, TOPIC, 2, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert relay.edited
    assert sorted(m["aggregate_version"] for m in messages) == [1, 2]


def test_a_full_batch_is_followed_at_once_by_the_next(
    store: WorkflowStore, database_url: str, broker: embedded.Service
) -> None:
    """A full batch means more may be waiting: the relay reads again at once, not at the
    next NOTIFY or poll (neither comes here)."""
    edit_some(store, 20)  # 21 events: three batches of 7
    config = relay_config(database_url, broker, poll_interval_s=60.0, batch_size=7)
    _, stop, thread = start_relay(store, config)
    try:
        messages = read_topic(broker.url, TOPIC, 21, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert sorted(m["aggregate_version"] for m in messages) == list(range(1, 22))


def test_only_one_relay_is_active_and_a_standby_takes_over(
    store: WorkflowStore, database_url: str, broker: embedded.Service
) -> None:
    config = relay_config(database_url, broker)
    first, stop_first, t1 = start_relay(store, config)
    assert first.active.wait(10)
    second, stop_second, t2 = start_relay(
        WorkflowStore(env=eventsourcing_env_for(database_url)), config
    )
    try:
        assert not second.active.wait(1.5)
        stop_first.set()
        t1.join(10)
        assert second.active.wait(10)
        edit_some(store, 3)
        assert len(read_topic(broker.url, TOPIC, 4)) == 4
    finally:
        stop_first.set()
        stop_second.set()
        t2.join(10)


def test_a_broker_that_comes_back_empty_gets_everything_again(
    store: WorkflowStore, database_url: str, broker: embedded.Service
) -> None:
    config = relay_config(database_url, broker, broker_check_interval_s=0.5)
    edit_some(store, 9)
    _, stop, thread = start_relay(store, config)
    try:
        assert len(read_topic(broker.url, TOPIC, 10)) == 10
        port = int(broker.url.rsplit(":", 1)[1])
        broker.stop()
        restarted = embedded.start_tansu(port)
        try:
            edit_some(store, 4)
            messages = read_topic(restarted.url, TOPIC, 15, timeout=30)
            versions = {(m["aggregate_id"], m["aggregate_version"]) for m in messages}
            assert len(versions) == 15
        finally:
            stop.set()
            thread.join(10)
            restarted.stop()
    finally:
        stop.set()
