"""`CatchUp`: an orchestrator counts as behind until it has read what its partitions held when
it got them (no lapse is declared meanwhile)."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from command_side.execution.orchestrator import CatchUp

RESULTS = TopicPartition("autoops.runner.results", 0)
EVENTS = TopicPartition("autoops.execution.events", 0)


class Consumer:
    """The three calls `CatchUp` makes of a kafka-python consumer."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.end_offset_calls = 0

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.end_offset_calls += 1
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def test_behind_until_every_partition_reached_its_end_at_assignment() -> None:
    consumer: Any = Consumer()
    catch_up = CatchUp()
    assert not catch_up.behind(consumer)  # nothing assigned yet
    consumer.assigned = {RESULTS, EVENTS}
    consumer.ends = {RESULTS: 5, EVENTS: 2}
    consumer.positions = {RESULTS: 0, EVENTS: 0}  # the first fetch has not come back
    assert catch_up.behind(consumer)
    consumer.positions = {RESULTS: 5, EVENTS: 1}
    assert catch_up.behind(consumer)
    consumer.ends = {RESULTS: 9, EVENTS: 9}  # written since: not waited for
    consumer.positions = {RESULTS: 5, EVENTS: 2}
    assert not catch_up.behind(consumer)
    assert not catch_up.behind(consumer)
    assert consumer.end_offset_calls == 1


def test_a_new_assignment_is_caught_up_again() -> None:
    consumer: Any = Consumer()
    catch_up = CatchUp()
    consumer.assigned, consumer.ends, consumer.positions = {RESULTS}, {RESULTS: 3}, {RESULTS: 3}
    assert not catch_up.behind(consumer)
    consumer.assigned = {RESULTS, EVENTS}  # a rebalance gave it another partition
    consumer.ends[EVENTS], consumer.positions[EVENTS] = 4, 0
    assert catch_up.behind(consumer)
    consumer.assigned = {RESULTS}  # and took it away before it was read: nothing to wait for
    assert not catch_up.behind(consumer)
