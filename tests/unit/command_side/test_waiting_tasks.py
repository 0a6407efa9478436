"""Which sent tasks still wait in their topic, by the runner groups' committed offsets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from kafka import TopicPartition
from kafka.errors import KafkaConnectionError
from kafka.structs import OffsetAndMetadata

from command_side.execution.waiting import BACKOFF_S, FRESH_S, WaitingTasks

TOPIC = "autoops.runner.tasks.default"
GROUP = "autoops-runner-default"


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
    return WaitingTasks("unused:9092", clock=lambda: clock[0], admin=lambda: admin)


def task(execution_id: UUID, node: str = "call", attempt: int = 1, pool: str = "default") -> Any:
    return {"execution_id": str(execution_id), "node_id": node, "attempt": attempt, "pool": pool}


def test_a_task_at_or_past_its_groups_committed_offset_waits_from_each_look() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    admin.committed = {2: 40}  # the next task a runner of the pool takes is at 40: this one
    heard: dict[str, float] = {}
    tasks.look(eid, heard, 100.0)
    assert tasks.since(eid) == {"call:1": 100.0} and heard == {}
    clock[0] += FRESH_S
    tasks.look(eid, heard, 130.0)
    assert tasks.since(eid) == {"call:1": 130.0} and heard == {}
    assert tasks.known() == [eid]


def test_a_task_a_runner_took_counts_as_heard_of_at_that_look() -> None:
    """Its runner may have taken it a moment ago, its first heartbeat on the way: lost only
    a heartbeat timeout after this look, not at once (its queue timeout is long past)."""
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    heard: dict[str, float] = {}
    tasks.look(eid, heard, 90.0)  # waiting then
    admin.committed = {2: 41}
    clock[0] += FRESH_S
    tasks.look(eid, heard, 100.0)
    assert heard == {"call:1": 100.0}
    assert tasks.known() == [] and tasks.since(eid) == {}  # its heartbeats speak for it now


def test_a_group_that_never_committed_on_the_partition_has_taken_nothing_there() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid, pool="browser"), Metadata("autoops.runner.tasks.browser", 0, 0))
    tasks.look(eid, {}, 5.0)
    assert tasks.since(eid) == {"call:1": 5.0}


def test_when_the_broker_cannot_say_nothing_is_found_and_it_is_not_asked_again_soon() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 7))
    admin.failing = True
    heard: dict[str, float] = {}
    tasks.look(eid, heard, 5.0)
    assert heard == {} and admin.closed
    assert tasks.since(eid) == {}  # the queue timeout decides, as without this
    admin.failing = False
    clock[0] += BACKOFF_S / 2
    tasks.look(eid, heard, 6.0)
    assert tasks.since(eid) == {} and admin.asked == 1  # the loop is not held up
    clock[0] += BACKOFF_S / 2
    tasks.look(eid, heard, 7.0)
    assert tasks.since(eid) == {"call:1": 7.0} and admin.asked == 2


def test_offsets_are_read_at_most_once_a_second_for_all_executions() -> None:
    admin, clock = Admin(), [0.0]
    tasks = waiting(admin, clock)
    ids = [uuid4() for _ in range(5)]
    for n, eid in enumerate(ids):
        tasks.sent(task(eid), Metadata(TOPIC, 0, n))
    for eid in ids:
        tasks.look(eid, {}, 1.0)
    assert admin.asked == 1
    clock[0] += FRESH_S
    tasks.look(ids[0], {}, 2.0)
    assert admin.asked == 2


def test_a_report_or_the_end_of_its_execution_forgets_a_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, first, second = waiting(admin, clock), uuid4(), uuid4()
    tasks.sent(task(first), Metadata(TOPIC, 0, 1))
    tasks.sent(task(second, attempt=2), Metadata(TOPIC, 0, 2))
    tasks.heard(first, "call:1")
    tasks.forget(second)
    tasks.look(first, {}, 3.0)
    tasks.look(second, {}, 3.0)
    assert tasks.since(first) == tasks.since(second) == {} and admin.asked == 0


def test_a_broker_that_may_have_come_back_empty_forgets_every_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 9))
    tasks.look(eid, {}, 1.0)
    tasks.forget_all()
    assert tasks.known() == [] and tasks.since(eid) == {}


def test_a_committed_offset_that_went_back_forgets_the_tasks_of_its_partition() -> None:
    """A broker that restarted empty starts its offsets again: the old log's offsets would
    look waiting for ever (until each step's deadline)."""
    admin, clock = Admin(), [0.0]
    tasks, old, other = waiting(admin, clock), uuid4(), uuid4()
    admin.committed = {0: 50, 1: 7}
    tasks.sent(task(old), Metadata(TOPIC, 0, 60))
    tasks.sent(task(other), Metadata(TOPIC, 1, 8))
    tasks.look(old, {}, 1.0)
    assert tasks.since(old) == {"call:1": 1.0}
    admin.committed = {0: 3, 1: 7}  # partition 0 started again
    clock[0] += FRESH_S
    heard: dict[str, float] = {}
    tasks.look(old, heard, 2.0)
    assert tasks.since(old) == {} and heard == {}  # the queue timeout from its dispatch again
    assert tasks.known() == [other]
    tasks.look(other, heard, 2.0)
    assert tasks.since(other) == {"call:1": 2.0}


def test_each_attempt_is_its_own_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid, attempt=1), Metadata(TOPIC, 0, 4))
    tasks.sent(task(eid, attempt=2), Metadata(TOPIC, 0, 9))
    admin.committed = {0: 5}
    heard: dict[str, float] = {}
    tasks.look(eid, heard, 1.0)
    assert heard == {"call:1": 1.0} and tasks.since(eid) == {"call:2": 1.0}
