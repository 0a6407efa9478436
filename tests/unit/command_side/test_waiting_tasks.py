"""Which sent tasks still wait in their topic, by the runner groups' committed offsets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError
from kafka.structs import OffsetAndMetadata

from command_side.execution import waiting as module
from command_side.execution.waiting import WaitingTasks

TOPIC = "autoops.runner.tasks.default"
GROUP = "autoops-runner-default"
QUEUE_S = 120.0


@dataclass
class Metadata:
    topic: str
    partition: int
    offset: int


class Admin:
    """The admin client's answer: the default pool's group committed `committed[p]`."""

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}
        self.asked = 0
        self.failing = False
        self.closed = False

    def list_group_offsets(self, groups: dict[str, None]) -> dict[str, Any]:
        self.asked += 1
        if self.failing:
            raise KafkaConnectionError("broker gone")
        return {
            group: {
                TopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1)
                for p, o in self.committed.items()
            }
            for group in groups
            if group == GROUP
        }

    def close(self) -> None:
        self.closed = True


def waiting(admin: Admin, clock: list[float]) -> WaitingTasks:
    return WaitingTasks("unused:9092", QUEUE_S, clock=lambda: clock[0], admin=lambda: admin)


def task(execution_id: UUID, node: str = "call", attempt: int = 1, pool: str = "default") -> Any:
    return {"execution_id": str(execution_id), "node_id": node, "attempt": attempt, "pool": pool}


def test_a_task_at_or_past_its_groups_committed_offset_waits_from_each_read() -> None:
    admin, clock = Admin(), [100.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    admin.committed = {2: 40}  # the next task a runner of the pool takes is at 40: this one
    heard: dict[str, float] = {}
    assert tasks.read()
    tasks.look(eid, heard)
    assert tasks.since(eid) == {"call:1": 100.0} and heard == {}
    clock[0] = 130.0
    tasks.read()
    assert tasks.since(eid) == {"call:1": 130.0} and heard == {}
    assert tasks.known() == [eid]
    tasks.close()


def test_a_task_a_runner_took_counts_as_heard_of_when_it_was_found_taken() -> None:
    """Its runner may have taken it a moment ago, its first heartbeat on the way: lost only
    a heartbeat timeout after it was found taken, not at once (its queue timeout is past)."""
    admin, clock = Admin(), [90.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    tasks.read()  # waiting then
    admin.committed = {2: 41}
    clock[0] = 100.0
    tasks.read()
    clock[0] = 100.5
    heard: dict[str, float] = {}
    tasks.look(eid, heard)
    assert heard == {"call:1": 100.0}
    assert tasks.known() == [] and tasks.since(eid) == {}  # its heartbeats speak for it now
    tasks.look(eid, heard)  # handed on once
    assert heard == {"call:1": 100.0}
    tasks.close()


def test_a_group_that_never_committed_on_the_partition_has_taken_nothing_there() -> None:
    admin, clock = Admin(), [5.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid, pool="browser"), Metadata("autoops.runner.tasks.browser", 0, 0))
    tasks.read()
    assert tasks.since(eid) == {"call:1": 5.0}
    tasks.close()


def test_when_the_broker_cannot_say_nothing_changes_and_the_client_is_kept() -> None:
    admin, clock = Admin(), [5.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 7))
    tasks.read()
    admin.failing = True
    clock[0] = 6.0
    assert not tasks.read()
    assert tasks.since(eid) == {"call:1": 5.0}  # the last sighting stands, no newer one
    assert not admin.closed  # it reconnects by itself when the broker is back
    admin.failing = False
    assert tasks.read() and tasks.since(eid) == {"call:1": 6.0}
    tasks.close()


def test_a_report_or_the_end_of_its_execution_forgets_a_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, first, second = waiting(admin, clock), uuid4(), uuid4()
    tasks.sent(task(first), Metadata(TOPIC, 0, 1))
    tasks.sent(task(second, attempt=2), Metadata(TOPIC, 0, 2))
    tasks.heard(first, "call:1")
    tasks.forget(second)
    tasks.read()
    assert tasks.known() == [] and tasks.since(first) == tasks.since(second) == {}
    assert admin.asked == 0  # nothing to ask about
    tasks.close()


def test_a_broker_that_may_have_come_back_empty_forgets_every_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 9))
    tasks.read()
    tasks.forget_all()
    assert tasks.known() == [] and tasks.since(eid) == {}
    tasks.close()


def test_a_committed_offset_that_went_back_forgets_the_tasks_of_its_partition() -> None:
    """A broker that restarted empty starts its offsets again: the old log's offsets would
    look waiting for ever (until each step's deadline)."""
    admin, clock = Admin(), [1.0]
    tasks, old, other = waiting(admin, clock), uuid4(), uuid4()
    admin.committed = {0: 50, 1: 7}
    tasks.sent(task(old), Metadata(TOPIC, 0, 60))
    tasks.sent(task(other), Metadata(TOPIC, 1, 8))
    tasks.read()
    assert tasks.since(old) == {"call:1": 1.0}
    admin.committed = {0: 3, 1: 7}  # partition 0 started again
    clock[0] = 2.0
    tasks.read()
    assert tasks.since(old) == {}  # judged by the queue timeout from its dispatch again
    assert tasks.known() == [other] and tasks.since(other) == {"call:1": 2.0}
    tasks.close()


def test_an_acknowledged_offset_not_above_an_earlier_one_forgets_the_partitions_tasks() -> None:
    """The tasks topic started again (a broker back empty, the topic recreated) while no
    runner had committed on the partition: the new log's first offsets tell."""
    admin, clock = Admin(), [1.0]
    tasks, old, new = waiting(admin, clock), uuid4(), uuid4()
    tasks.sent(task(old), Metadata(TOPIC, 0, 5))
    tasks.read()
    tasks.sent(task(new), Metadata(TOPIC, 0, 0))
    assert tasks.known() == [new] and tasks.since(old) == {}
    tasks.close()


def test_each_attempt_is_its_own_task() -> None:
    admin, clock = Admin(), [1.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid, attempt=1), Metadata(TOPIC, 0, 4))
    tasks.sent(task(eid, attempt=2), Metadata(TOPIC, 0, 9))
    admin.committed = {0: 5}
    tasks.read()
    heard: dict[str, float] = {}
    tasks.look(eid, heard)
    assert heard == {"call:1": 1.0} and tasks.since(eid) == {"call:2": 1.0}
    tasks.close()


def test_the_thread_reads_only_when_a_known_tasks_queue_timeout_is_near(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "EVERY_S", 0.01)
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 3))  # due at 120, read from 110 on
    try:
        time.sleep(0.2)  # twenty of the thread's looks: time passing is what is checked
        assert admin.asked == 0
        clock[0] = 110.0
        deadline = time.monotonic() + 10
        while not tasks.since(eid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tasks.since(eid) == {"call:1": 110.0}  # due again at 230
        asked = admin.asked
        time.sleep(0.2)
        assert admin.asked == asked  # not again until near 230
    finally:
        tasks.close()
