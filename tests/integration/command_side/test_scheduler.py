"""The cron scheduler on a real event store: fires missed while no scheduler ran are made up
only as far back as its catch-up window, each once however many schedulers run."""

from __future__ import annotations

import logging
import time
from uuid import uuid4

import pytest

from command_side.errors import NotFound, ValidationFailed
from command_side.execution.aggregate import Execution
from command_side.execution.scheduler import Scheduler, fire_id
from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore
from command_side.workflow import node_types
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from infra.settings import eventsourcing_env_for


def every_second(database_url: str, fields: dict[str, str] | None = None) -> str:
    """A published workflow whose cron trigger fires every second."""
    workflows = WorkflowStore(env=eventsourcing_env_for(database_url))
    meta = Meta(actor_id="u1", workspace_id="ws1", client_op_id=None)
    workflow = Workflow.create(uuid4(), "tick", "", meta)
    workflow.add_node(
        "trigger.cron", "cron", {"expression": "* * * * * *"}, 0, 0, meta, node_id="cron"
    )
    workflow.add_node("data.transform", "t", {"fields": fields or {}}, 0, 0, meta, node_id="t")
    workflow.connect("cron", "t", None, None, meta)
    workflow.publish("", meta)
    workflows.save(workflow)
    workflows.close()
    return str(workflow.id)


def test_missed_fires_are_made_up_within_the_window_only(database_url: str) -> None:
    env = eventsourcing_env_for(database_url)
    every_second(database_url)
    now = float(int(time.time()))
    window, none = Scheduler(env, catch_up_s=5), Scheduler(env, catch_up_s=0)
    try:
        made_up = window.tick(now)
        assert len(made_up) == 5  # the fires of the last five seconds, up to now
        store = ExecutionStore(env=env)
        fired = sorted(store.get(Execution, i).trigger["at"] for i in made_up)
        assert fired == [now - 4, now - 3, now - 2, now - 1, now]
        store.close()
        assert none.tick(now) == []  # nothing missed is made up, and nothing started twice
        assert len(none.tick(now + 1)) == 1 and window.tick(now + 1) == []
    finally:
        for scheduler in (window, none):
            scheduler.workflows.close()
            scheduler.executions.close()


def test_a_fire_of_a_workflow_that_cannot_run_is_recorded_failed_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its owner sees the refusal where executions are (FAILED, with the reason, no step
    run), once however many schedulers refuse it; the next fire is tried again."""
    env = eventsourcing_env_for(database_url)
    workflow_id = every_second(database_url, {"x": "{{ steps.elsewhere.output }}"})  # no such
    now = float(int(time.time()))
    scheduler, other = Scheduler(env, catch_up_s=0), Scheduler(env, catch_up_s=0)
    store = ExecutionStore(env=env)
    try:
        scheduler.tick(now)  # learns the trigger; the next fire is due a second later
        other.tick(now)
        with caplog.at_level(logging.INFO, logger="command_side.execution.scheduler"):
            assert scheduler.tick(now + 1) == []
            assert other.tick(now + 1) == []
        refused = [r for r in caplog.records if "not started" in r.getMessage()]
        assert refused and all(r.levelno == logging.WARNING for r in refused)
        assert "steps.elsewhere" in refused[0].getMessage()
        assert not [r for r in caplog.records if "could not be recorded" in r.getMessage()]
        recorded = store.get(Execution, fire_id(workflow_id, "cron", now + 1))
        assert recorded.status == "FAILED" and recorded.admitted_at is None
        assert recorded.error is not None and "the cron fire could not start" in recorded.error
        assert "steps.elsewhere" in recorded.error
        assert recorded.trigger == {"kind": "cron", "node_id": "cron", "at": now + 1}
        assert len(recorded.collect_events()) == 0 and recorded.version == 2  # started, failed
        # The next fire is tried again and refused for the same reason: logged, not recorded
        # again (a schedule of every second would record 86,400 a day).
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="command_side.execution.scheduler"):
            assert scheduler.tick(now + 2) == []
        assert [r for r in caplog.records if "not started" in r.getMessage()]
        with pytest.raises(NotFound):
            store.get(Execution, fire_id(workflow_id, "cron", now + 2))
        # Nothing ran: a retry would run the graph the checks refused.
        with pytest.raises(ValidationFailed, match="never started"):
            scheduler.service.retry("ws1", "u1", recorded.id, "t")
    finally:
        store.close()
        for s in (scheduler, other):
            s.workflows.close()
            s.executions.close()


LOCKER = Meta(actor_id="ada", workspace_id="ws1", client_op_id=None)


def locked(workflows: WorkflowStore, now: float, *lock: str) -> Workflow:
    """A stored workflow with nodes a and b, those in `lock` leased for 5 s from `now`."""
    workflow = Workflow.create(uuid4(), "locks", "", LOCKER)
    for node_id in ("a", "b"):
        workflow.add_node("data.transform", node_id, {}, 0, 0, LOCKER, node_id=node_id)
    for node_id in lock:
        workflow.lock_node(node_id, 5, LOCKER, now)
    workflows.save(workflow)
    return workflow


def test_a_lease_nobody_renews_is_recorded_expired_once(database_url: str) -> None:
    env = eventsourcing_env_for(database_url)
    workflows = WorkflowStore(env=env)
    now = time.time()
    workflow = locked(workflows, now, "a", "b")  # a's holder then vanishes
    meta = LOCKER
    first, second = Scheduler(env), Scheduler(env)
    try:
        first.tick(now + 1)
        assert set(first.leases) == {(str(workflow.id), "a"), (str(workflow.id), "b")}
        renewed = workflows.load(workflow.id)
        renewed.renew_lock("b", meta, now + 4)  # b's holder is still there
        workflows.save(renewed)
        for scheduler in (first, second):  # two schedulers, one expiry
            scheduler.tick(now + 6)
        stored = workflows.load(workflow.id)
        assert stored.lock_of("a", now) is None and "a" not in stored.locks
        assert stored.lock_of("b", now + 6) is not None  # renewed: left alone
        kinds = [type(e).__name__ for e in workflows.events_after(workflow.id, 0)]
        assert kinds.count("LockExpired") == 1
        first.tick(now + 10)
        assert "b" not in workflows.load(workflow.id).locks
    finally:
        workflows.close()
        for scheduler in (first, second):
            scheduler.workflows.close()
            scheduler.executions.close()


def test_a_lease_whose_expiry_keeps_losing_races_is_expired_on_a_later_tick(
    database_url: str,
) -> None:
    env = eventsourcing_env_for(database_url)
    workflows, editor = WorkflowStore(env=env), WorkflowStore(env=env)
    now = time.time()
    workflow = locked(workflows, now, "a")  # its holder then vanishes
    meta = LOCKER
    scheduler = Scheduler(env)
    load = scheduler.workflows.load
    races = [3]

    def load_then_lose_the_race(originator_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        loaded = load(originator_id, *args, **kwargs)
        if races[0]:  # another editor's write lands between the scheduler's load and save
            races[0] -= 1
            busy = editor.load(originator_id)
            busy.move_node("b", races[0], 0, meta)
            editor.save(busy)
        return loaded

    scheduler.workflows.load = load_then_lose_the_race  # type: ignore[method-assign]
    try:
        scheduler.tick(now + 1)
        scheduler.tick(now + 6)  # three lost races: nothing recorded yet, the lease kept
        assert "a" in workflows.load(workflow.id).locks
        assert (str(workflow.id), "a") in scheduler.leases
        scheduler.tick(now + 7)
        assert "a" not in workflows.load(workflow.id).locks
        kinds = [type(e).__name__ for e in workflows.events_after(workflow.id, 0)]
        assert kinds.count("LockExpired") == 1 and kinds.count("NodeMoved") == 3
    finally:
        for store in (workflows, editor, scheduler.workflows, scheduler.executions):
            store.close()


def test_a_cron_that_never_fires_is_refused_on_edit_and_skipped_if_already_published(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`0 0 30 2 *` parses, but February has no 30th: croniter finds no next date. An edit
    is refused; one published before that check must not stop the scheduler (it used to
    raise at every start, so no cron fired and no lease expired anywhere)."""
    meta = Meta(actor_id="u1", workspace_id="ws1", client_op_id=None)
    with pytest.raises(ValidationFailed, match="never fires"):
        Workflow.create(uuid4(), "x", "", meta).add_node(
            "trigger.cron", "c", {"expression": "0 0 30 2 *"}, 0, 0, meta
        )
    workflows = WorkflowStore(env=eventsourcing_env_for(database_url))
    with monkeypatch.context() as legacy:  # as stored before the check existed
        legacy.setattr(node_types, "never_fires", lambda expression: False)
        workflow = Workflow.create(uuid4(), "never", "", meta)
        workflow.add_node(
            "trigger.cron", "c", {"expression": "0 0 30 2 *"}, 0, 0, meta, node_id="cron"
        )
        workflow.publish("", meta)
        workflows.save(workflow)
    workflows.close()
    every_second(database_url)
    now = float(int(time.time()))
    scheduler = Scheduler(eventsourcing_env_for(database_url), catch_up_s=0)
    try:
        scheduler.tick(now)
        assert len(scheduler.tick(now + 1)) == 1  # the other workflow's trigger fires
    finally:
        scheduler.workflows.close()
        scheduler.executions.close()
