"""The projector process: faust agents fold event topics into the read models.

Each batch commits its read-model changes and tracking rows in one PostgreSQL transaction
(exactly-once effects whatever Kafka redelivers), then publishes change notices on Redis.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import psycopg
import redis.asyncio as aioredis

from command_side.contracts.envelope import Envelope, EnvelopeError, decode
from command_side.contracts.log import STORES, EventLog
from infra import kafka
from projections import notices
from projections.applier import Applier, ensure_read_models
from projections.faust_driver import LowLatencyApp

log = logging.getLogger(__name__)
HEARTBEAT_KEY = "autoops:heartbeat:projector"
#: Contexts whose event topics the projector folds.
CONTEXTS = tuple(STORES)


@dataclass(frozen=True, kw_only=True)
class ProjectorConfig:
    database_url: str
    eventsourcing_env: dict[str, str]
    bootstrap: str
    redis_url: str
    partitions: int = 4
    batch_size: int = 500
    fetch_max_wait_ms: int = 5
    #: The fetch wait once the topics have been quiet for `idle_after_s` (`kafka.FetchWait`).
    idle_fetch_max_wait_ms: int = 100
    idle_after_s: float = 5.0
    group_timeout_ms: int = 6000
    batch_window_s: float = 0.001
    data_dir: str = ".autoops"


class Projector:
    """Owns the faust app and the resources its agents use."""

    def __init__(self, config: ProjectorConfig) -> None:
        self.config = config
        self.applied = 0
        self.rejected = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._redis: aioredis.Redis | None = None
        self._logs: dict[str, EventLog] = {}
        self._applier: Applier | None = None
        #: Agents of several topics share one connection: one batch transaction at a time.
        self._batch_lock: asyncio.Lock | None = None
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        cfg = self.config
        seconds = cfg.group_timeout_ms / 1000
        app = LowLatencyApp(
            "autoops-projector",
            broker=f"kafka://{cfg.bootstrap}",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            idle_fetch_max_wait_ms=cfg.idle_fetch_max_wait_ms,
            idle_after_s=cfg.idle_after_s,
            web_enabled=False,
            datadir=f"{cfg.data_dir}/projector",
            key_serializer="raw",
            value_serializer="raw",
            topic_partitions=cfg.partitions,
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=seconds,
            broker_rebalance_timeout=seconds,
            broker_heartbeat_interval=max(seconds / 6, 0.2),
            broker_request_timeout=max(seconds * 2, 30),
            broker_commit_interval=1.0,
            stream_wait_empty=False,
        )
        for context in CONTEXTS:
            topic = app.topic(
                kafka.events_topic(context),
                key_type=bytes,
                value_type=bytes,
                partitions=cfg.partitions,
                internal=False,
            )
            app.agent(topic, name=f"{context}-projections")(self._agent)

        @app.timer(1.0)
        async def heartbeat() -> None:
            _, redis = await self.resources()
            assigned = len(app.consumer.assignment())
            if not assigned:  # not consuming anything yet (or more projectors than partitions)
                return
            state = {
                "pid": os.getpid(),
                "assigned": assigned,
                "applied": self.applied,
                "rejected": self.rejected,
            }
            try:
                await redis.set(HEARTBEAT_KEY, json.dumps(state), ex=5)
            except aioredis.RedisError as exc:
                log.warning("projector: heartbeat failed: %s", exc)

        return app

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        cfg = self.config
        async for batch in stream.take(cfg.batch_size, within=cfg.batch_window_s):
            try:
                await self.handle(batch)
            except Exception:
                # Crash-only: a batch that cannot be committed (database gone, a bug) must
                # not be acknowledged. Exit at once, without committing offsets; the
                # supervisor restarts us and the batch is read again.
                log.critical("projector: batch failed; exiting to retry it", exc_info=True)
                logging.shutdown()
                os._exit(70)

    async def resources(self) -> tuple[Applier, aioredis.Redis]:
        if self._applier is None or self._redis is None:
            self._conn = await psycopg.AsyncConnection.connect(self.config.database_url)
            env = self.config.eventsourcing_env
            self._logs = {context: EventLog(env, context) for context in CONTEXTS}
            logs = self._logs

            async def read_gap(context: str, aggregate_id: str, after: int) -> list[Envelope]:
                return await asyncio.to_thread(logs[context].aggregate, aggregate_id, after)

            self._applier = Applier(self._conn, gap_reader=read_gap)
            await self._applier.setup()
            self._redis = aioredis.from_url(self.config.redis_url)
        return self._applier, self._redis

    async def handle(self, raw_values: list[bytes]) -> None:
        if self._batch_lock is None:
            self._batch_lock = asyncio.Lock()
        async with self._batch_lock:
            await self._handle(raw_values)

    async def _handle(self, raw_values: list[bytes]) -> None:
        applier, redis = await self.resources()
        envelopes: list[Envelope] = []
        for raw in raw_values:
            try:
                envelopes.append(decode(raw))
            except EnvelopeError as exc:
                self.rejected += 1
                log.error("projector: rejected a malformed message: %s", exc)
        changes = await applier.apply(envelopes)
        self.applied += len(envelopes)
        try:
            await notices.publish(redis, changes)
        except aioredis.RedisError as exc:  # read models are committed; notices are best-effort
            log.warning("projector: change notice failed: %s", exc)

    def run(self) -> None:
        """Run the worker until SIGINT/SIGTERM."""
        kafka.ensure_topics(self.config.bootstrap, self.config.partitions)
        asyncio.run(ensure_read_models(self.config.database_url))
        # faust creates its data directory but not the parents (absent when no embedded
        # service put anything under AUTOOPS_DATA_DIR).
        Path(self.config.data_dir).mkdir(parents=True, exist_ok=True)
        worker = faust.Worker(self.app, loglevel="WARNING", quiet=True)
        gc.freeze()  # start-up objects live forever: spare them the collector's full passes
        worker.execute_from_commandline()
