"""The command bus on real PostgreSQL: group commit, idempotency, versions and races."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import wait
from uuid import uuid4

import psycopg
import pytest

from command_side.bus import CommandBus, _Pending
from command_side.errors import Conflict, NotFound, ValidationFailed
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow.commands import Meta
from infra.settings import eventsourcing_env_for

META = Meta(actor_id="alice", workspace_id="ws1")


def op(key: str) -> Meta:
    return Meta(actor_id="alice", workspace_id="ws1", client_op_id=key)


@pytest.fixture
def store(database_url: str) -> WorkflowStore:
    return WorkflowStore(env=eventsourcing_env_for(database_url))


@pytest.fixture
def bus(store: WorkflowStore) -> Iterator[CommandBus]:
    b = CommandBus(store)
    b.start()
    yield b
    b.stop()


def test_many_concurrent_commands_share_few_transactions(
    bus: CommandBus, store: WorkflowStore
) -> None:
    created = bus.execute(c.CreateWorkflow(name="w"), META)
    futures = [
        bus.submit(c.AddNode(workflow_id=created.workflow_id, node_type="http.request"), META)
        for _ in range(300)
    ]
    wait(futures)
    versions = sorted(f.result().version for f in futures)
    assert versions == list(range(2, 302))
    assert bus.batches < 100
    assert len(store.load(created.workflow_id).nodes) == 300


def test_a_repeated_operation_returns_the_first_result_and_appends_nothing(
    bus: CommandBus, store: WorkflowStore
) -> None:
    first = bus.execute(c.CreateWorkflow(name="w"), op("create-1"))
    again = bus.execute(c.CreateWorkflow(name="w"), op("create-1"))
    assert again == first
    add = c.AddNode(workflow_id=first.workflow_id, node_type="http.request")
    one = bus.execute(add, op("add-1"))
    two = bus.execute(add, op("add-1"))
    assert one == two
    assert store.load(first.workflow_id).version == 2


def test_expected_version_rebases_unrelated_edits_and_refuses_real_conflicts(
    bus: CommandBus,
) -> None:
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    a = bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="a"), META)
    bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="b"), META)
    seen = a.version + 1
    bus.execute(c.RemoveNode(workflow_id=wid, node_id="a", expected_version=seen), META)
    moved = bus.execute(
        c.MoveNode(workflow_id=wid, node_id="b", x=1, y=2, expected_version=seen), META
    )
    assert moved.version == seen + 2
    with pytest.raises(Conflict) as info:
        bus.execute(
            c.UpdateNode(workflow_id=wid, node_id="a", name="z", expected_version=seen), META
        )
    assert info.value.current_version == seen + 2
    with pytest.raises(Conflict):
        bus.execute(c.RenameWorkflow(workflow_id=wid, name="z", expected_version=99), META)


def test_bad_input_is_refused_and_appends_nothing(bus: CommandBus, store: WorkflowStore) -> None:
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    with pytest.raises(ValidationFailed):
        bus.execute(c.RenameWorkflow(workflow_id=wid, name=" "), META)
    with pytest.raises(NotFound):
        bus.execute(c.UpdateNode(workflow_id=wid, node_id="nope", name="x"), META)
    with pytest.raises(NotFound):
        bus.execute(c.RenameWorkflow(workflow_id=uuid4(), name="x"), META)
    other_workspace = Meta(actor_id="mallory", workspace_id="ws2")
    with pytest.raises(NotFound):
        bus.execute(c.RenameWorkflow(workflow_id=wid, name="x"), other_workspace)
    assert store.load(wid).version == 1


@pytest.fixture
def two_processes(database_url: str) -> Iterator[tuple[CommandBus, CommandBus]]:
    """Two buses on two stores: two api processes writing to one database."""
    env = eventsourcing_env_for(database_url)
    buses = CommandBus(WorkflowStore(env=env)), CommandBus(WorkflowStore(env=env))
    for bus in buses:
        bus.start()
    yield buses
    for bus in buses:
        bus.stop()


def test_two_processes_racing_rebase_or_conflict(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = first.execute(c.CreateWorkflow(name="w"), META).workflow_id
    first.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="a"), META)
    second.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="b"), META)
    # `first` has a stale cache now: its write races, is retried and rebased.
    result = first.execute(c.MoveNode(workflow_id=wid, node_id="a", x=3, y=4), META)
    assert result.version == 4
    second.execute(c.RemoveNode(workflow_id=wid, node_id="a"), META)
    with pytest.raises((Conflict, NotFound)):
        first.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="gone"), META)


def test_long_lived_workflows_are_snapshotted_and_load_the_same(
    bus: CommandBus, store: WorkflowStore, database_url: str
) -> None:
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    for i in range(store.snapshot_every + 5):
        bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id=f"n{i}"), META)
    fresh = WorkflowStore(env=eventsourcing_env_for(database_url))
    assert fresh.snapshots is not None
    assert len(list(fresh.snapshots.get(wid))) == 1
    assert fresh.load(wid).graph() == store.load(wid).graph()
    assert fresh.load(wid, version=150).version == 150
    fresh.close()


def test_a_batch_retried_after_a_race_does_not_conflict_with_itself(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = first.execute(c.CreateWorkflow(name="w"), META).workflow_id
    second.execute(c.RenameWorkflow(workflow_id=wid, name="elsewhere"), META)
    first.stop()  # drive one batch by hand: add a node, then edit it, on a stale cache
    add = _Pending(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="n"), META)
    edit = _Pending(c.UpdateNode(workflow_id=wid, node_id="n", name="edited"), META)
    first._commit_batch([add, edit])
    assert add.future.result(5).version == 3
    assert edit.future.result(5).version == 4
    assert first._store.load(wid).nodes["n"]["name"] == "edited"


def test_a_snapshot_that_fails_after_the_commit_fails_no_caller(
    bus: CommandBus, store: WorkflowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events are committed before the snapshot is written: a snapshot that fails (the
    database gone that instant) costs loading speed, and must not tell the callers their
    committed commands failed (a retry without clientOpId would apply them twice)."""

    def lost(workflow: object) -> None:
        raise psycopg.OperationalError("the connection was lost")

    monkeypatch.setattr(store, "snapshot", lost)
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    for i in range(store.snapshot_every + 2):
        bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id=f"n{i}"), META)
    assert store.load(wid).version == store.snapshot_every + 3
