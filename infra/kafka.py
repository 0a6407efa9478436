"""Kafka adapter (kafka-python): topic names, explicit topic creation, producers, offsets."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

CONTEXTS = ("workflow", "execution", "identity", "recording")
RUNNER_POOLS = ("default", "browser", "desktop")


def events_topic(context: str) -> str:
    return f"autoops.{context}.events"


def all_topics() -> list[str]:
    topics = [events_topic(c) for c in CONTEXTS]
    topics += [f"autoops.runner.tasks.{pool}" for pool in RUNNER_POOLS]
    return [*topics, "autoops.runner.results", "autoops.runner.dlq"]


def ensure_topics(
    bootstrap: str, partitions: int, topics: Iterable[str] | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones it created."""
    wanted = list(topics or all_topics())
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="autoops-admin")
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()


def make_producer(bootstrap: str, client_id: str) -> KafkaProducer:
    """An acks=all producer tuned for small, frequent batches."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=1,
        max_in_flight_requests_per_connection=1,
        retries=5,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )


class OffsetReader:
    """Reads end offsets over one long-lived connection (cheap enough to ask every second)."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="autoops-offsets")

    def end_offsets(self, topic: str) -> dict[int, int] | None:
        """The end offset of each partition of `topic`, or None when the topic does not exist."""
        self._consumer.topics()  # refresh metadata: a restarted broker may have lost the topic
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return {tp.partition: int(o) for tp, o in self._consumer.end_offsets(tps).items()}

    def close(self) -> None:
        self._consumer.close()


__all__ = [
    "KafkaError",
    "KafkaProducer",
    "OffsetReader",
    "all_topics",
    "ensure_topics",
    "events_topic",
    "make_producer",
]
