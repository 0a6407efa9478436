"""The runners' committed offsets, read from the real broker, tell waiting tasks from taken
ones: what a runner of the pool took (committed before it runs) and what still waits."""

from __future__ import annotations

import time
from uuid import uuid4

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from command_side.execution.waiting import WaitingTasks
from infra import kafka


def test_tasks_behind_the_pools_committed_offset_wait_and_those_past_it_are_taken(
    kafka_bootstrap: str,
) -> None:
    pool = f"waiting-{uuid4().hex[:8]}"
    topic = kafka.tasks_topic(pool)
    kafka.ensure_topics(kafka_bootstrap, 1, [topic])
    clock = [10.0]
    tasks = WaitingTasks(kafka_bootstrap, 120.0, clock=lambda: clock[0])
    producer = kafka.make_producer(kafka_bootstrap, "test-waiting")
    consumer = kafka.make_consumer(
        kafka_bootstrap,
        "test-waiting-runner",
        group_id=kafka.runner_group(pool),
        group_timeout_ms=2000,
        max_poll_records=1,
    )
    eid = uuid4()
    try:
        # Sent together, as the orchestrator sends a batch's tasks: one produce batch.
        sends = [
            (node, producer.send(topic, key=str(eid).encode(), value=b"{}"))
            for node in ("a", "b", "c")
        ]
        producer.flush(10)
        for node, future in sends:
            meta = future.get(0)
            task = {"execution_id": str(eid), "node_id": node, "attempt": 1, "pool": pool}
            tasks.sent(task, meta)
        heard: dict[str, float] = {}
        assert tasks.read()  # the group has committed nothing yet
        tasks.look(eid, heard)
        assert heard == {} and tasks.since(eid) == {"a:1": 10.0, "b:1": 10.0, "c:1": 10.0}

        # A runner takes the first one, as runners do: its offset committed before it runs.
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        records: list = []
        while not records and time.monotonic() < deadline:
            records = [r for batch in consumer.poll(200).values() for r in batch]
        assert records and records[0].offset == 0
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})

        clock[0] = 20.0
        assert tasks.read()
        tasks.look(eid, heard)
        assert heard == {"a:1": 20.0}
        assert tasks.since(eid) == {"b:1": 20.0, "c:1": 20.0}
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        tasks.close()
