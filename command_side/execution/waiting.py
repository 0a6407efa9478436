"""Tasks still waiting in their topic: the broker vouches for them.

A step sent to runners and never heard of (no heartbeat) is either waiting behind busy
runners or lost: its runner died between taking it and its first heartbeat, or it never
reached the broker. The orchestrator used to tell them apart by time alone (the queue
timeout), so a backlog longer than a few queue timeouts sent steps again and again, and past
their free redeliveries failed steps no runner had ever taken. Runners commit a task's offset
in their pool's group before they run it, so the group's committed offset says which: below
the task's offset, no runner has taken it yet and the topic still holds it for the next one.
Such a task counts as heard of at each look; once a runner has taken it, its heartbeats
speak for it, and without them it is lost a heartbeat timeout later.

Only tasks this process sent are known (their offsets come back with the broker's
acknowledgement): after a restart or a rebalance, the queue timeout alone decides, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError

from infra import kafka

log = logging.getLogger(__name__)

#: How long the groups' committed offsets are trusted between looks.
FRESH_S = 1.0


@dataclass(frozen=True)
class Sent:
    group: str
    partition: TopicPartition
    offset: int


class WaitingTasks:
    def __init__(
        self,
        bootstrap: str,
        clock: Callable[[], float] = time.monotonic,
        admin: Callable[[], Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._clock = clock
        self._make_admin = admin or self._connect
        self._admin: Any = None
        #: execution → "<node>:<attempt>" → where its task is.
        self._sent: dict[UUID, dict[str, Sent]] = {}
        self._committed: dict[str, dict[TopicPartition, int]] = {}
        self._read_at = float("-inf")

    def sent(self, task: dict[str, Any], metadata: Any) -> None:
        """A task the broker acknowledged (`metadata`: its RecordMetadata)."""
        where = Sent(
            kafka.runner_group(str(task.get("pool") or "default")),
            TopicPartition(metadata.topic, metadata.partition),
            int(metadata.offset),
        )
        key = f"{task['node_id']}:{task['attempt']}"
        self._sent.setdefault(UUID(str(task["execution_id"])), {})[key] = where

    def heard(self, execution_id: UUID, key: str) -> None:
        """A runner spoke for the step: it has the task."""
        self._sent.get(execution_id, {}).pop(key, None)

    def forget(self, execution_id: UUID) -> None:
        self._sent.pop(execution_id, None)

    def known(self) -> list[UUID]:
        return list(self._sent)

    def vouch(self, execution_id: UUID, heard: dict[str, float], now: float) -> None:
        """Mark the execution's tasks that wait in their topic as heard of `now`; forget those
        a runner has taken. Nothing changes when the broker cannot say."""
        tasks = self._sent.get(execution_id)
        if not tasks:
            return
        committed = self._read({t.group for t in tasks.values()})
        if committed is None:
            return
        for key, where in list(tasks.items()):
            if committed.get(where.group, {}).get(where.partition, -1) > where.offset:
                del tasks[key]  # taken: its runner's heartbeats (or their absence) decide
            else:
                heard[key] = now
        if not tasks:
            del self._sent[execution_id]

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except KafkaError as exc:
                log.debug("orchestrator: closing the admin client failed: %s", exc)

    def _read(self, groups: set[str]) -> dict[str, dict[TopicPartition, int]] | None:
        if self._clock() - self._read_at < FRESH_S and groups <= self._committed.keys():
            return self._committed
        try:
            if self._admin is None:
                self._admin = self._make_admin()
            answer = self._admin.list_group_offsets({group: None for group in groups})
        except (KafkaError, OSError) as exc:
            log.info("orchestrator: the runners' committed offsets are unknown (%s)", exc)
            self.close()
            return None
        self._committed = {
            group: {tp: int(om.offset) for tp, om in (answer.get(group) or {}).items()}
            for group in groups
        }
        self._read_at = self._clock()
        return self._committed

    def _connect(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id="autoops-orchestrator-admin",
            request_timeout_ms=5000,
            reconnect_backoff_max_ms=kafka.RECONNECT_BACKOFF_MAX_MS,
        )
