"""Which sent tasks still wait in their topic, by the runner groups' committed offsets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from kafka import TopicPartition
from kafka.errors import KafkaConnectionError
from kafka.structs import OffsetAndMetadata

from command_side.execution.waiting import FRESH_S, WaitingTasks

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


def task(execution_id: Any, node: str = "call", attempt: int = 1, pool: str = "default") -> Any:
    return {"execution_id": str(execution_id), "node_id": node, "attempt": attempt, "pool": pool}


def test_a_task_below_its_groups_committed_offset_is_vouched_for_at_each_look() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    admin.committed = {2: 40}  # the next task a runner of the pool takes is at 40: this one
    heard: dict[str, float] = {}
    tasks.vouch(eid, heard, 100.0)
    assert heard == {"call:1": 100.0}
    clock[0] += FRESH_S
    tasks.vouch(eid, heard, 130.0)
    assert heard == {"call:1": 130.0}
    assert tasks.known() == [eid]


def test_a_task_a_runner_took_is_left_to_its_heartbeats() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 2, 40))
    admin.committed = {2: 41}
    heard = {"call:1": 90.0}
    tasks.vouch(eid, heard, 100.0)
    assert heard == {"call:1": 90.0}  # its lapse counts from what was heard of it
    assert tasks.known() == []


def test_a_group_that_never_committed_on_the_partition_has_taken_nothing_there() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid, pool="browser"), Metadata("autoops.runner.tasks.browser", 0, 0))
    heard: dict[str, float] = {}
    tasks.vouch(eid, heard, 5.0)
    assert heard == {"call:1": 5.0}


def test_when_the_broker_cannot_say_nothing_is_vouched_for() -> None:
    admin, clock = Admin(), [0.0]
    tasks, eid = waiting(admin, clock), uuid4()
    tasks.sent(task(eid), Metadata(TOPIC, 0, 7))
    admin.failing = True
    heard: dict[str, float] = {}
    tasks.vouch(eid, heard, 5.0)
    assert heard == {} and admin.closed  # the queue timeout decides, as without this
    assert tasks.known() == [eid]  # asked again at the next look


def test_offsets_are_read_at_most_once_a_second_for_all_executions() -> None:
    admin, clock = Admin(), [0.0]
    tasks = waiting(admin, clock)
    ids = [uuid4() for _ in range(5)]
    for n, eid in enumerate(ids):
        tasks.sent(task(eid), Metadata(TOPIC, 0, n))
    for eid in ids:
        tasks.vouch(eid, {}, 1.0)
    assert admin.asked == 1
    clock[0] += FRESH_S
    tasks.vouch(ids[0], {}, 2.0)
    assert admin.asked == 2


def test_a_heartbeat_or_the_end_of_its_execution_forgets_a_task() -> None:
    admin, clock = Admin(), [0.0]
    tasks, first, second = waiting(admin, clock), uuid4(), uuid4()
    tasks.sent(task(first), Metadata(TOPIC, 0, 1))
    tasks.sent(task(second, attempt=2), Metadata(TOPIC, 0, 2))
    tasks.heard(first, "call:1")
    tasks.forget(second)
    heard: dict[str, float] = {}
    tasks.vouch(first, heard, 3.0)
    tasks.vouch(second, heard, 3.0)
    assert heard == {} and admin.asked == 0
