"""Kafka adapter (kafka-python): topic names, explicit topic creation, producers, offsets."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from infra.settings import RUNNER_POOLS

log = logging.getLogger(__name__)

CONTEXTS = ("workflow", "execution", "identity", "recording")
RESULTS_TOPIC = "autoops.runner.results"
DLQ_TOPIC = "autoops.runner.dlq"
CONTROL_TOPIC = "autoops.runner.control"


def events_topic(context: str) -> str:
    return f"autoops.{context}.events"


def tasks_topic(pool: str) -> str:
    return f"autoops.runner.tasks.{pool}"


def runner_group(pool: str) -> str:
    """The consumer group of a pool's runners: its committed offsets say which tasks a runner
    has taken (runners commit a task before they run it)."""
    return f"autoops-runner-{pool}"


def all_topics() -> list[str]:
    topics = [events_topic(c) for c in CONTEXTS]
    topics += [tasks_topic(pool) for pool in RUNNER_POOLS]
    return [*topics, RESULTS_TOPIC, DLQ_TOPIC, CONTROL_TOPIC]


class AdminClient(KafkaAdminClient):  # type: ignore[misc]
    """kafka-python's admin client, less a leak: kafka-python 3 starts the client's I/O
    thread before it reaches the broker, and a client that could not is never returned to be
    closed (each failed try left a thread and its sockets behind)."""

    def __init__(self, **configs: Any) -> None:
        try:
            super().__init__(**configs)
        except Exception:
            client, net = getattr(self, "_client", None), getattr(self, "_net", None)
            with contextlib.suppress(Exception):
                if client is not None:
                    client.close()
            with contextlib.suppress(Exception):
                if net is not None:
                    net.stop()
            raise


def ensure_topics(
    bootstrap: str, partitions: int, topics: Iterable[str] | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones it created."""
    wanted = list(topics or all_topics())
    admin = AdminClient(bootstrap_servers=bootstrap, client_id="autoops-admin")
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


#: kafka-python's own metrics (sensors updated on every request and record): nothing of ours
#: reads them, and they cost an idle consumer about 15 % of its CPU (130 against 155 ms a
#: second at a 10 ms fetch wait, measured on Tansu).
METRICS = False

#: kafka-python backs off reconnecting up to 30 s by default: after a broker restart, clients
#: would sit idle long after it is back.
RECONNECT_BACKOFF_MAX_MS = 1000


def make_producer(bootstrap: str, client_id: str) -> KafkaProducer:
    """An acks=all producer for callers that `flush()` after each batch of sends (every one of
    ours does): the messages of a batch leave together, at the flush."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        # The flush sends at once whatever the linger. With 0, each send would wake the I/O
        # thread and leave in a request of its own: in the relay, 13% of its CPU went to
        # those wake-ups alone.
        linger_ms=100,
        max_in_flight_requests_per_connection=1,
        retries=5,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        metrics_enabled=METRICS,
    )


def flush_timeout_s(heartbeat_timeout_s: float) -> float:
    """How long a runner or the orchestrator waits for a flush: a third of the step heartbeat
    timeout (1-10 s). A producer a restarted broker no longer knows hangs its flushes until
    they time out; waiting less replaces it before the steps it reports on are given up as
    lost (their heartbeats wait behind the flush)."""
    return max(1.0, min(10.0, heartbeat_timeout_s / 3))


def make_consumer(
    bootstrap: str,
    client_id: str,
    *,
    group_id: str | None = None,
    fetch_max_wait_ms: int = 5,
    group_timeout_ms: int = 6000,
    max_poll_records: int = 500,
) -> KafkaConsumer:
    """A consumer that commits only when told, with a small fetch wait (Tansu answers a
    waiting fetch late) and short group timeouts (Tansu's joins wait about the rebalance
    timeout, which kafka-python takes from `max_poll_interval_ms`)."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=group_timeout_ms,
        max_poll_interval_ms=group_timeout_ms,
        heartbeat_interval_ms=max(group_timeout_ms // 6, 200),
        request_timeout_ms=max(group_timeout_ms * 2, 30_000),
        max_poll_records=max_poll_records,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        metrics_enabled=METRICS,
    )


class FetchWait:
    """A consumer's fetch wait: short while messages flow, long after a quiet spell.

    Tansu answers a waiting fetch only when (part of) the wait is over, so hops are fast only
    with a short wait; but every empty fetch costs CPU in the client and the broker (an idle
    kafka-python consumer at 10 ms: 10-14 % of a core; Tansu about as much again for a few of
    them). After `quiet_s` without a message the wait becomes `idle_ms`: the first message
    after that arrives up to `idle_ms` late, and the wait is short again from the next fetch.
    Brokers that answer at once (Apache Kafka) lose nothing either way."""

    def __init__(
        self,
        apply: Callable[[int], None],
        busy_ms: int,
        idle_ms: int,
        quiet_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply = apply
        self.busy_ms = busy_ms
        self.idle_ms = max(idle_ms, busy_ms)
        self._quiet_s = quiet_s
        self._clock = clock
        self._last = clock()
        self.current = busy_ms

    def polled(self, got_messages: bool) -> None:
        """After each poll: whether it returned anything."""
        if got_messages:
            self._last = self._clock()
            wanted = self.busy_ms
        elif self._clock() - self._last >= self._quiet_s:
            wanted = self.idle_ms
        else:
            return
        if wanted != self.current:
            self._apply(wanted)
            self.current = wanted


def fetch_wait_of(consumer: KafkaConsumer, busy_ms: int, idle_ms: int, quiet_s: float) -> FetchWait:
    """The adaptive fetch wait of a kafka-python consumer (its fetcher reads the setting at
    each fetch request it builds)."""

    config = getattr(getattr(consumer, "_fetcher", None), "config", None)
    if not isinstance(config, dict) or "fetch_max_wait_ms" not in config:
        # kafka-python moved it: keep the configured wait rather than fail the consumer.
        log.warning("this kafka-python has no fetcher config to adapt; fetch wait stays fixed")
        config = {}

    def apply(ms: int) -> None:
        config["fetch_max_wait_ms"] = ms

    return FetchWait(apply, busy_ms, idle_ms, quiet_s)


class OffsetReader:
    """Reads end offsets over one long-lived connection (cheap enough to ask every second)."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, client_id="autoops-offsets", metrics_enabled=METRICS
        )

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
    "CONTROL_TOPIC",
    "DLQ_TOPIC",
    "RESULTS_TOPIC",
    "AdminClient",
    "FetchWait",
    "KafkaConsumer",
    "KafkaError",
    "KafkaProducer",
    "OffsetReader",
    "all_topics",
    "ensure_topics",
    "events_topic",
    "fetch_wait_of",
    "flush_timeout_s",
    "make_consumer",
    "make_producer",
    "runner_group",
    "tasks_topic",
]
