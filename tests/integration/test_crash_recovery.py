"""kill -9 of relay and projector under load, and a broker restart: nothing lost, nothing
applied twice, checked by exact counts against the event store."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from command_side.bus import CommandBus
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from infra import embedded
from infra.settings import eventsourcing_env_for
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import wait_until

META = c.Meta(actor_id="loader", workspace_id="ws-crash")
pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[embedded.Service]:
    service = embedded.start_tansu()
    yield service
    service.stop()


def load(store: WorkflowStore, workflows: int, edits: int, stop: threading.Event) -> list[str]:
    """Create workflows and add nodes to them from several threads; returns workflow ids."""
    bus = CommandBus(store)
    bus.start()
    ids = [bus.execute(c.CreateWorkflow(name=f"w{i}"), META).workflow_id for i in range(workflows)]

    def worker(k: int) -> None:
        for i in range(edits):
            if stop.is_set():
                return
            bus.execute(
                c.AddNode(workflow_id=ids[(k + i) % workflows], node_type="data.transform"), META
            )

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.stop()
    return [str(i) for i in ids]


def wait_caught_up(database_url: str, timeout: float = 120) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:

        def caught_up() -> bool:
            if conn.execute("SELECT to_regclass('read.workflows')").fetchone() == (None,):
                return False
            behind = conn.execute(
                "SELECT count(*) FROM (SELECT originator_id, max(originator_version) v"
                " FROM workflow_events GROUP BY originator_id) s"
                " LEFT JOIN read.workflows w ON w.id = s.originator_id"
                " WHERE w.version IS DISTINCT FROM s.v"
            ).fetchone()
            return behind == (0,)

        wait_until(caught_up, timeout, "the read model caught up", every=0.2)


def assert_exact(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        events = conn.execute("SELECT count(*) FROM workflow_events").fetchone()
        history = conn.execute("SELECT count(*) FROM read.workflow_history").fetchone()
        assert history == events
        mismatched = conn.execute(
            "SELECT w.id, w.node_count, (SELECT count(*) FROM read.workflow_nodes n"
            " WHERE n.workflow_id = w.id), (SELECT count(*) FROM workflow_events e"
            " WHERE e.originator_id = w.id) - 1 FROM read.workflows w"
        ).fetchall()
        for wid, counted, rows, added in mismatched:
            assert counted == rows == added, wid


def kill_repeatedly(stack: Stack, names: list[str], stop: threading.Event) -> int:
    """SIGKILL each named process in turn, 1.5 s apart, each time the one running then (a
    process killed before waits for the supervisor to restart it)."""
    kills = 0
    killed: dict[str, int] = {}

    def running(name: str) -> subprocess.Popen[bytes] | None:
        proc = stack.supervisor.children[name]
        return proc if proc.pid != killed.get(name) and proc.poll() is None else None

    for name in names:
        if stop.wait(1.5):
            break
        proc = wait_until(lambda n=name: running(n), 30, f"{name} running again")
        os.kill(proc.pid, signal.SIGKILL)
        killed[name] = proc.pid
        kills += 1
    return kills


def test_kill_9_of_relay_and_projector_under_load_loses_and_duplicates_nothing(
    database_url: str, broker: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(database_url, broker.url, redis_db(redis_url), tmp_path)
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    with running_stack(settings, ("relay", "projector")) as stack:
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(store, 10, 100_000, stop))
        loader.start()
        kills = kill_repeatedly(
            stack, ["relay", "projector", "relay", "projector", "relay"], threading.Event()
        )
        stop.set()
        loader.join()
        assert kills == 5
        wait_caught_up(database_url)
        assert stack.supervisor.restarts >= 5
        wait_caught_up(database_url)
        assert_exact(database_url)
    store.close()


def test_a_broker_restart_is_survived_end_to_end(
    database_url: str, broker: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(database_url, broker.url, redis_db(redis_url), tmp_path)
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    with running_stack(settings, ("relay", "projector")):
        load(store, workflows=3, edits=20, stop=threading.Event())
        wait_caught_up(database_url)
        port = int(broker.url.rsplit(":", 1)[1])
        broker.stop()
        restarted = embedded.start_tansu(port)
        try:
            load(store, workflows=3, edits=20, stop=threading.Event())
            wait_caught_up(database_url)
            assert_exact(database_url)
        finally:
            restarted.stop()
    store.close()


def test_a_batch_that_cannot_be_committed_is_retried_not_skipped(
    database_url: str, broker: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(database_url, broker.url, redis_db(redis_url), tmp_path)
    store = WorkflowStore(env=eventsourcing_env_for(database_url))
    with running_stack(settings, ("relay", "projector")) as stack:
        load(store, workflows=2, edits=5, stop=threading.Event())
        wait_caught_up(database_url)
        # Break a fold the way a bug or a lost database would: every batch now fails.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "CREATE OR REPLACE FUNCTION read.apply_workflow_history(events jsonb)"
                " RETURNS void LANGUAGE plpgsql AS $$ BEGIN RAISE 'injected failure'; END $$"
            )
        load(store, workflows=2, edits=5, stop=threading.Event())
        # The projector exits without acknowledging; restarted, it reinstalls its folds.
        wait_caught_up(database_url)
        assert stack.supervisor.restarts >= 1
        assert_exact(database_url)
    store.close()
