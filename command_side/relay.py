"""The relay: tails the event store (the outbox) and publishes envelopes to Kafka.

At-least-once: a batch is published and acknowledged by the broker before its position is
recorded in PostgreSQL, so a kill at any instant re-publishes at most one batch. One relay per
context is active (PostgreSQL advisory lock); others wait. When the broker comes back empty
(Tansu keeps nothing on disk) the relay notices and re-publishes the whole log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka.errors import KafkaError

from command_side.contracts.envelope import MAX_ENVELOPE_BYTES, fitted, to_envelope
from command_side.execution.dispatch import Message
from command_side.execution.store import ExecutionStore
from command_side.identity.store import IdentityStore
from command_side.store import WorkflowStore
from infra import kafka

log = logging.getLogger(__name__)

POSITION_DDL = """
CREATE TABLE IF NOT EXISTS autoops_relay_position (
    context text PRIMARY KEY,
    position bigint NOT NULL,
    published bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE autoops_relay_position ADD COLUMN IF NOT EXISTS routed bigint NOT NULL DEFAULT 0;
"""

POSITION_DDL_LOCK = zlib.crc32(b"autoops.relay.position-ddl")


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    context: str
    database_url: str
    bootstrap: str
    partitions: int
    batch_size: int = 500
    poll_interval_s: float = 1.0
    broker_check_interval_s: float = 2.0


class Relay:
    """Publishes one context's event log to its Kafka topic."""

    def __init__(
        self,
        store: WorkflowStore | IdentityStore | ExecutionStore,
        config: RelayConfig,
        heartbeat: Callable[..., None] | None = None,
        route: Callable[[Any], list[tuple[str, str, dict[str, Any]]]] | None = None,
    ) -> None:
        self._store = store
        #: Runner-facing messages of an event (tasks, cancels, dead letters), sent once.
        self._route = route
        self._routed: int | None = None
        self._heartbeat = heartbeat or (lambda **_: None)
        self._config = config
        self.topic = kafka.events_topic(config.context)
        self._lock_key = zlib.crc32(f"autoops.relay.{config.context}".encode())
        #: Per partition, the lowest offset acknowledged in the latest batch: a broker whose
        #: end offset falls to or below it has lost what we published.
        self._acked: dict[int, int] = {}
        #: Per partition, the highest offset ever acknowledged to this relay.
        self._high: dict[int, int] = {}
        self._saved: tuple[int, int] | None = None
        self.active = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Wait to become the active relay, then publish until `stop` is set."""
        cfg = self._config
        with psycopg.connect(cfg.database_url, autocommit=True) as lock_conn:
            while not stop.is_set():
                row = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
                if row.fetchone() == (True,):
                    break
                stop.wait(1.0)
            if stop.is_set():
                return
            log.info("relay for %s is active", cfg.context)
            self.active.set()
            self._saved = None
            try:
                self._publish_loop(stop, lock_conn)
            finally:
                self.active.clear()

    def _publish_loop(self, stop: threading.Event, lock_conn: psycopg.Connection) -> None:
        cfg = self._config
        with psycopg.connect(cfg.database_url, autocommit=True) as conn:
            with conn.transaction():  # the relays of all contexts start together
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (POSITION_DDL_LOCK,))
                conn.execute(POSITION_DDL)
            conn.execute(f'LISTEN "{self._store.events_table}"')
            producer = None
            offsets: kafka.OffsetReader | None = None
            next_broker_check = 0.0
            while not stop.is_set():
                try:
                    if producer is None or offsets is None:
                        kafka.ensure_topics(cfg.bootstrap, cfg.partitions)
                        producer = kafka.make_producer(
                            cfg.bootstrap, f"autoops-relay-{cfg.context}"
                        )
                        offsets = kafka.OffsetReader(cfg.bootstrap)
                        self._check_broker(conn, offsets, force=True)
                    elif time.monotonic() >= next_broker_check:
                        # Our advisory lock lives as long as its connection: if that died,
                        # another relay may be active now. Raise; the process restarts.
                        lock_conn.execute("SELECT 1")
                        self._check_broker(conn, offsets)
                        next_broker_check = time.monotonic() + cfg.broker_check_interval_s
                    more = self._publish_batch(conn, producer)
                    self._heartbeat(kafka="up")
                except (KafkaError, OSError) as exc:
                    log.warning("relay: broker unavailable (%s); retrying", exc)
                    self._heartbeat(kafka=f"unavailable: {exc}")
                    _close_quietly(producer, offsets)
                    producer, offsets = None, None
                    stop.wait(1.0)
                    continue
                if more:
                    continue
                # Nothing more for now: sleep until the store NOTIFYs an insert, or poll again.
                # A NOTIFY sent while the batch went out is kept (psycopg holds those that come
                # between two `notifies()`, or they wait unread on the socket), so this returns
                # at once for it: no second query just to find the log empty.
                for _ in conn.notifies(timeout=cfg.poll_interval_s, stop_after=1):
                    pass
            _close_quietly(producer, offsets)

    def _position(self, conn: psycopg.Connection) -> tuple[int, int]:
        # Read once per activation: while we hold the advisory lock nobody else writes it.
        if self._saved is None:
            row = conn.execute(
                "SELECT position, published FROM autoops_relay_position WHERE context = %s",
                (self._config.context,),
            ).fetchone()
            self._saved = (int(row[0]), int(row[1])) if row else (0, 0)
        return self._saved

    def _save_position(self, conn: psycopg.Connection, position: int, published: int) -> None:
        self._saved = None  # until the write below is known to have happened
        conn.execute(
            "INSERT INTO autoops_relay_position (context, position, published) VALUES (%s, %s, %s) "
            "ON CONFLICT (context) DO UPDATE SET position = EXCLUDED.position, "
            "published = EXCLUDED.published, updated_at = now()",
            (self._config.context, position, published),
        )
        self._saved = (position, published)

    def _publish_batch(self, conn: psycopg.Connection, producer: kafka.KafkaProducer) -> bool:
        """Publish one batch from the log past our position. Returns whether more may be
        waiting (a full batch, or a broker that lost everything): read again at once."""
        position, published = self._position(conn)
        notifications = self._store.recorder.select_notifications(
            start=position, limit=self._config.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return False
        futures = []
        routed = self._routed_up_to(conn)
        messages = []
        for notification in notifications:
            event = self._store.mapper.to_domain_event(notification)
            envelope, value = fitted(to_envelope(self._config.context, event, notification.id))
            if "in_store" in envelope:
                log.warning(
                    "relay: %s v%d of %s is larger than a Kafka message; %s left in the store",
                    envelope["type"],
                    envelope["aggregate_version"],
                    envelope["aggregate_id"],
                    ", ".join(envelope["in_store"]),
                )
            futures.append(
                producer.send(
                    self.topic,
                    key=envelope["aggregate_id"].encode(),
                    value=value,
                    # Consumers that want a few types skip the others without decoding them.
                    headers=[("type", envelope["type"].encode())],
                )
            )
            if self._route is not None and notification.id > routed:
                messages += self._route(event)
        # Runner messages (cancels, session releases, dead letters) go at least once, like
        # the events: their mark moves with the position, after the broker has them all. A
        # repeat is harmless (a cancel or release of what has stopped does nothing; dead
        # letters carry their task id); a loss would leave a cancelled step running.
        routed_futures = [f for f in (self._send_routed(producer, m) for m in messages) if f]
        producer.flush(timeout=10)
        acked: dict[int, int] = {}
        high = dict(self._high)
        went_back = False
        for future in futures:
            meta = future.get(timeout=10)
            acked[meta.partition] = min(acked.get(meta.partition, meta.offset), meta.offset)
            # Offsets only grow; a smaller one means the broker restarted empty and
            # recreated the topic on our send.
            went_back |= meta.offset <= high.get(meta.partition, -1)
            high[meta.partition] = max(high.get(meta.partition, -1), meta.offset)
        self._high = high
        if went_back:
            self._start_over(conn)
            return True
        for future in routed_futures:
            future.get(timeout=10)  # refused for now (the broker): the batch goes again
        if messages:
            self._save_routed(conn, notifications[-1].id)
        self._acked.update(acked)
        self._save_position(conn, notifications[-1].id, published + len(notifications))
        return len(notifications) >= self._config.batch_size

    def _send_routed(self, producer: kafka.KafkaProducer, message: Message) -> Any:
        """Send one runner message; None for one no broker would ever take (too large even
        without its task copy), which is logged, not retried for ever."""
        topic, key, value = message
        raw = _json(value)
        if len(raw) > MAX_ENVELOPE_BYTES and "task" in value:
            # A dead letter's copy of the task (its rendered config) made it too large: the
            # task id, the error and the attempts say what failed; the task is in the store.
            raw = _json({**value, "task": {"omitted": "larger than a Kafka message"}})
        if len(raw) > MAX_ENVELOPE_BYTES:
            log.error("relay: a %s message of %s is too large to send; dropped", topic, key)
            return None
        return producer.send(topic, key=key.encode(), value=raw)

    def _routed_up_to(self, conn: psycopg.Connection) -> int:
        if self._routed is None:
            row = conn.execute(
                "SELECT routed FROM autoops_relay_position WHERE context = %s",
                (self._config.context,),
            ).fetchone()
            self._routed = int(row[0]) if row else 0
        return self._routed

    def _save_routed(self, conn: psycopg.Connection, routed: int) -> None:
        if routed == self._routed:
            return
        self._routed = None
        conn.execute(
            "INSERT INTO autoops_relay_position (context, position, published, routed) "
            "VALUES (%s, 0, 0, %s) ON CONFLICT (context) DO UPDATE SET routed = EXCLUDED.routed",
            (self._config.context, routed),
        )
        self._routed = routed

    def _start_over(self, conn: psycopg.Connection) -> None:
        log.warning("relay: broker lost %s; re-publishing from the start", self.topic)
        kafka.ensure_topics(self._config.bootstrap, self._config.partitions)
        self._acked.clear()
        self._high.clear()
        self._save_position(conn, 0, 0)

    def _check_broker(
        self, conn: psycopg.Connection, reader: kafka.OffsetReader, force: bool = False
    ) -> None:
        """Re-publish everything when the broker lost the topic or what we sent to it."""
        offsets = reader.end_offsets(self.topic)
        _, published = self._position(conn)
        lost = offsets is None
        if offsets is not None:
            if self._acked:
                lost = any(offsets.get(p, 0) <= low for p, low in self._acked.items())
            elif force and published > 0:
                lost = sum(offsets.values()) == 0
        if lost:
            self._start_over(conn)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _close_quietly(
    producer: kafka.KafkaProducer | None, offsets: kafka.OffsetReader | None
) -> None:
    """Drop clients of a broker that failed; what they held unsent is published again."""
    try:
        if producer is not None:
            producer.close(timeout=1)
    except KafkaError as exc:
        log.debug("relay: closing the producer failed: %s", exc)
    try:
        if offsets is not None:
            offsets.close()
    except KafkaError as exc:
        log.debug("relay: closing the offset reader failed: %s", exc)
