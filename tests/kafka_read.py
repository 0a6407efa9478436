"""Reading a topic back in tests (kafka-python, no consumer group)."""

from __future__ import annotations

import json
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def read_topic(bootstrap: str, topic: str, want: int, timeout: float = 20) -> list[dict[str, Any]]:
    """Every message of `topic` from the start, waiting until at least `want` arrived."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.05)
        assert partitions, f"topic {topic} does not exist"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        out: list[dict[str, Any]] = []
        while len(out) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                out.extend(json.loads(r.value) | {"_key": r.key.decode()} for r in records)
        return out
    finally:
        consumer.close()
