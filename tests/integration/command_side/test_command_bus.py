"""The command bus on real PostgreSQL: group commit, idempotency, versions and races."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import wait
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from command_side.bus import RACE_RETRIES, CommandBus, _Pending
from command_side.errors import Conflict, Locked, NotFound, ValidationFailed
from command_side.execution.scheduler import Scheduler
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow.commands import Meta
from infra.settings import eventsourcing_env_for

META = Meta(actor_id="alice", workspace_id="ws1")
BOB = Meta(actor_id="bob", workspace_id="ws1")
MEMBERS = frozenset({"alice", "bob"})
REVIEWER = Meta(actor_id="bob", workspace_id="ws1")


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


def frozen(store: WorkflowStore, workflow_id: UUID, version: int) -> dict[str, Any]:
    """What a version publishes: the graph as of `version`."""
    graph = store.load(workflow_id, version=version).graph()
    return {k: graph[k] for k in ("name", "description", "nodes", "edges")}


def test_a_publish_is_rebased_over_a_lease_the_scheduler_expired(
    bus: CommandBus, store: WorkflowStore, database_url: str
) -> None:
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="a"), META)
    seen = bus.execute(c.LockNode(workflow_id=wid, node_id="a", ttl_s=1), META).version
    scheduler = Scheduler(eventsourcing_env_for(database_url))
    try:
        scheduler.tick(time.time() + 2)  # nobody renewed the lease: it has run out
    finally:
        scheduler.workflows.close()
        scheduler.executions.close()
    assert "a" not in store.load(wid).locks
    # The bus still holds version `seen`: its publish races the expiry, is retried and rebased.
    published = bus.execute(c.PublishWorkflow(workflow_id=wid), META)
    assert published.created_id == "1" and published.version == seen + 2
    [version] = store.load(wid).published
    assert frozen(store, wid, version["version"]) == frozen(store, wid, seen)


def test_a_publish_is_rebased_over_a_review(bus: CommandBus, store: WorkflowStore) -> None:
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    seen = bus.execute(
        c.AddNode(workflow_id=wid, node_type="data.transform", node_id="a"), META
    ).version
    members = frozenset({"alice", "bob"})
    thread = bus.execute(
        c.AddComment(workflow_id=wid, node_id="a", body="LGTM", members=members), REVIEWER
    ).created_id
    assert thread
    bus.execute(
        c.ReplyToComment(workflow_id=wid, comment_id=thread, body="ok", members=members), META
    )
    bus.execute(c.ResolveThread(workflow_id=wid, thread_id=thread, resolved=True), REVIEWER)
    published = bus.execute(c.PublishWorkflow(workflow_id=wid, expected_version=seen), META)
    assert published.created_id == "1"
    [version] = store.load(wid).published
    assert frozen(store, wid, version["version"]) == frozen(store, wid, seen)
    # A graph edit in between still is a conflict.
    bus.execute(c.RenameWorkflow(workflow_id=wid, name="v2"), REVIEWER)
    with pytest.raises(Conflict, match="workflow/name"):
        bus.execute(c.PublishWorkflow(workflow_id=wid, expected_version=published.version), META)


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


def node_a(bus: CommandBus) -> UUID:
    """A workflow at version 2 with one node, `a`."""
    wid = bus.execute(c.CreateWorkflow(name="w"), META).workflow_id
    bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="a"), META)
    return wid


def test_a_command_that_loses_every_race_leaves_nothing_behind(
    bus: CommandBus, store: WorkflowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    wid = node_a(bus)
    save = store.save
    races = [1 + RACE_RETRIES]

    def lost(*workflows: Any) -> Any:
        if races[0]:
            races[0] -= 1
            raise IntegrityError("another process wrote this version first")
        return save(*workflows)

    monkeypatch.setattr(store, "save", lost)
    with pytest.raises(Conflict, match="too fast"):
        bus.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="x"), META)
    bus.execute(c.MoveNode(workflow_id=wid, node_id="a", x=1, y=1), META)
    assert set(store.load(wid).nodes) == {"a"}


# -- several api processes: every answer holds for the workflow as it is in the store ------


def test_a_node_unlocked_through_another_process_is_editable_here(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = node_a(first)
    first.execute(c.LockNode(workflow_id=wid, node_id="a"), BOB)
    with pytest.raises(Locked):
        first.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="mine"), META)
    second.execute(c.UnlockNode(workflow_id=wid, node_id="a"), BOB)  # Bob's tab is elsewhere
    edited = first.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="mine"), META)
    assert edited.version == 5
    assert first._store.load(wid).nodes["a"]["name"] == "mine"


def test_a_reply_to_a_comment_made_through_another_process(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = node_a(first)
    look = c.AddComment(workflow_id=wid, node_id="a", body="look", members=MEMBERS)
    thread = second.execute(look, BOB).created_id
    assert thread
    reply = c.ReplyToComment(workflow_id=wid, comment_id=thread, body="ok", members=MEMBERS)
    assert first.execute(reply, META).version == 4


def test_the_holder_renews_a_lock_taken_through_another_process(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = node_a(first)
    second.execute(c.AddNode(workflow_id=wid, node_type="data.transform", node_id="b"), META)
    locked = first.execute(c.LockNode(workflow_id=wid, node_id="a"), META)
    renewed = second.execute(c.RenewLock(workflow_id=wid, node_id="a"), META)
    assert renewed.version == locked.version + 1
    assert float(renewed.created_id or 0) >= float(locked.created_id or 0)


def test_an_edit_naming_no_version_applies_to_the_current_workflow(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    first, second = two_processes
    wid = node_a(first)
    second.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="bob's"), BOB)
    # Later, through the other process, alice renames it again, naming no version.
    renamed = first.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="alice's"), META)
    assert renamed.version == 4
    assert first._store.load(wid).nodes["a"]["name"] == "alice's"


def test_an_edit_naming_no_version_that_loses_a_race_applies_to_the_winner(
    two_processes: tuple[CommandBus, CommandBus], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two_processes
    wid = node_a(first)
    save = first._store.save
    racing = [True]

    def raced(*workflows: Any) -> Any:
        if racing:  # bob's edit commits first, once
            racing.clear()
            second.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="bob's"), BOB)
        return save(*workflows)

    monkeypatch.setattr(first._store, "save", raced)
    renamed = first.execute(c.UpdateNode(workflow_id=wid, node_id="a", name="alice's"), META)
    assert renamed.version == 4
    assert first._store.load(wid).nodes["a"]["name"] == "alice's"


def test_every_operation_repeated_with_its_client_op_id_answers_the_first_result(
    two_processes: tuple[CommandBus, CommandBus],
) -> None:
    """The retry after a lost answer may reach another api process."""
    first, second = two_processes
    wid = node_a(first)

    def twice(key: str, command: c.WorkflowCommand) -> c.CommandResult:
        once = first.execute(command, op(key))
        assert second.execute(command, op(key)) == once
        assert first._store.load(wid).version == once.version  # the repeat appended nothing
        return once

    twice("rename", c.RenameWorkflow(workflow_id=wid, name="  Invoices "))
    twice("describe", c.ChangeDescription(workflow_id=wid, description=""))
    twice("add", c.AddNode(workflow_id=wid, node_type="data.transform"))
    b = c.AddNode(workflow_id=wid, node_type="data.transform", node_id="b", name=" B ", x=1, y=2)
    twice("add-b", b)
    config = {"fields": {"k": "v"}}
    twice("update", c.UpdateNode(workflow_id=wid, node_id="b", name=" B2 ", config=config))
    twice("move", c.MoveNode(workflow_id=wid, node_id="b", x=3, y=4))
    connect = c.ConnectNodes(workflow_id=wid, source_id="a", target_id="b", label="", condition="")
    edge = twice("connect", connect).created_id
    twice("disconnect", c.DisconnectNodes(workflow_id=wid, edge_id=edge or ""))
    twice("lock", c.LockNode(workflow_id=wid, node_id="a"))
    twice("unlock", c.UnlockNode(workflow_id=wid, node_id="a"))
    look = c.AddComment(
        workflow_id=wid, node_id="a", body="look", mentions=("bob", "bob"), members=MEMBERS
    )
    thread = twice("comment", look).created_id or ""
    reply = c.ReplyToComment(workflow_id=wid, comment_id=thread, body="ok", members=MEMBERS)
    answer = twice("reply", reply).created_id or ""
    twice("edit", c.EditComment(workflow_id=wid, comment_id=answer, body="ok!", members=MEMBERS))
    twice("resolve", c.ResolveThread(workflow_id=wid, thread_id=thread))
    twice("reopen", c.ResolveThread(workflow_id=wid, thread_id=thread, resolved=False))
    twice("delete", c.DeleteComment(workflow_id=wid, comment_id=answer))
    twice("publish", c.PublishWorkflow(workflow_id=wid, note="first"))
    twice("remove", c.RemoveNode(workflow_id=wid, node_id="b"))


def test_a_client_op_id_reused_for_another_command_is_a_conflict_and_changes_nothing(
    bus: CommandBus, store: WorkflowStore
) -> None:
    wid = node_a(bus)
    bus.execute(c.AddComment(workflow_id=wid, body="hi", members=MEMBERS), op("k1"))
    for other in (
        c.LockNode(workflow_id=wid, node_id="a"),
        c.RenameWorkflow(workflow_id=wid, name="x"),
        c.AddComment(workflow_id=wid, body="hello", members=MEMBERS),  # other input
    ):
        with pytest.raises(Conflict, match="clientOpId") as info:
            bus.execute(other, op("k1"))
        assert info.value.current_version == 3
    workflow = store.load(wid)
    assert (workflow.version, workflow.locks, workflow.name) == (3, {}, "w")


def test_a_client_op_id_is_one_actors_own(bus: CommandBus, store: WorkflowStore) -> None:
    wid = node_a(bus)
    hi = c.AddComment(workflow_id=wid, body="hi", members=MEMBERS)
    first = bus.execute(hi, op("k1"))
    bobs = Meta(actor_id="bob", workspace_id="ws1", client_op_id="k1")
    with pytest.raises(Conflict, match="clientOpId"):
        bus.execute(hi, bobs)
    assert bus.execute(hi, op("k1")) == first
    created = bus.execute(c.CreateWorkflow(name="mine"), op("create"))
    with pytest.raises(Conflict, match="clientOpId"):
        bus.execute(c.CreateWorkflow(name="mine"), replace(bobs, client_op_id="create"))
    with pytest.raises(Conflict, match="clientOpId"):
        bus.execute(c.CreateWorkflow(name="another"), op("create"))
    assert bus.execute(c.CreateWorkflow(name="mine"), op("create")) == created
    assert store.load(wid).version == 3 and store.load(created.workflow_id).version == 1


def test_a_batch_answers_what_it_committed_even_when_the_head_look_fails(
    bus: CommandBus, store: WorkflowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal on a cached copy waits for a look at the store's head; the commands the
    batch committed do not: were they answered with that look's error, a client would add
    its node again."""
    edited, refused = node_a(bus), node_a(bus)  # both cached by the bus
    bus.stop()  # this test drives one batch itself

    def unreachable(_ids: Any) -> Any:
        raise OperationalError("the database went away")

    monkeypatch.setattr(bus, "_heads", unreachable)
    add = _Pending(c.AddNode(workflow_id=edited, node_type="data.transform"), META)
    missing = _Pending(c.RemoveNode(workflow_id=refused, node_id="nope"), META)
    with pytest.raises(OperationalError):
        bus._commit_batch([add, missing])
    assert add.future.result(0).version == 3
    assert not missing.future.done()  # the writer's loop fails what is left unanswered
    assert len(store.load(edited).nodes) == 2
