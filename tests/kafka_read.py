"""Reading a topic back in tests (kafka-python, no consumer group)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.waiting import wait_until


def read_topic(
    bootstrap: str,
    topic: str,
    want: int,
    timeout: float = 20,
    matching: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Every message of `topic` from the start (those `matching`, if given), waiting until
    `want` distinct ones (by aggregate and version: re-published duplicates count once)
    arrived."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + timeout
        partitions = wait_until(
            lambda: consumer.partitions_for_topic(topic), timeout, f"topic {topic} exists"
        )
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        out: list[dict[str, Any]] = []
        distinct: set[tuple[str, int]] = set()
        while len(distinct) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100).values():
                for r in records:
                    message = json.loads(r.value) | {
                        "_key": r.key.decode(),
                        "_headers": {k: bytes(v).decode() for k, v in r.headers or ()},
                    }
                    if matching is not None and not matching(message):
                        continue
                    out.append(message)
                    distinct.add((message["aggregate_id"], message["aggregate_version"]))
        return out
    finally:
        consumer.close()


def read_topic_raw(bootstrap: str, topic: str, timeout: float = 20) -> list[dict[str, object]]:
    """Whatever `topic` held when asked (JSON messages), read from the start up to the end
    each partition had then."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    try:
        partitions = wait_until(
            lambda: consumer.partitions_for_topic(topic), timeout, f"topic {topic} exists"
        )
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        out: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout} s"
            for records in consumer.poll(timeout_ms=100).values():
                out += [json.loads(r.value) for r in records]
        return out
    finally:
        consumer.close()
