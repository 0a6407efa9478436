"""Tasks still waiting in their topic: the runners' consumer group vouches for them.

A step sent to runners and never heard of (no heartbeat, no result) is either waiting behind
busy runners or lost: its runner died between taking it and its first heartbeat, or the
broker lost it. By time alone (the queue timeout) the two look the same, so a backlog longer
than a few queue timeouts sent waiting steps again and again and, past their free
redeliveries, failed steps no runner had taken. Runners commit a task's offset in their
pool's group before they run it, so the group's committed offset tells them apart: at or
below the task's offset, no runner has taken it and the topic still holds it for the next
one (it counts as waiting from that look); past it, a runner has it (it counts as heard of
at that look, and its heartbeats speak for it from then on).

Only tasks this process sent and the broker acknowledged are known (the offset comes with
the acknowledgement), and only while nothing says the log they were written to may be gone:
a new producer, a consumer that had to reconnect, a group offset that went backwards all
forget them. Unknown tasks, and every task while the broker does not answer, are judged by
the queue timeout alone, as before. Looks ask the broker at most once a second in all, and
after a failed one not again for `BACKOFF_S`: the orchestrator's loop waits for them.
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
#: After a look the broker did not answer, how long before the next one.
BACKOFF_S = 10.0
#: The longest a look may hold up the orchestrator's loop (connecting, then the request).
LOOK_TIMEOUT_MS = 2000

Committed = dict[tuple[str, TopicPartition], int]


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
        #: execution → "<node>:<attempt>" → when a look last found it waiting.
        self._since: dict[UUID, dict[str, float]] = {}
        self._committed: Committed = {}
        self._read_at = float("-inf")
        self._quiet_until = float("-inf")

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
        tasks = self._sent.get(execution_id)
        if tasks is not None and tasks.pop(key, None) is not None and not tasks:
            del self._sent[execution_id]
        self._since.get(execution_id, {}).pop(key, None)

    def forget(self, execution_id: UUID) -> None:
        self._sent.pop(execution_id, None)
        self._since.pop(execution_id, None)

    def forget_all(self) -> None:
        """The log the tasks were written to may be gone (a broker that came back empty
        starts its offsets again): what was known of them says nothing any more."""
        self._sent.clear()
        self._since.clear()
        self._committed.clear()

    def known(self) -> list[UUID]:
        return list(self._sent)

    def since(self, execution_id: UUID) -> dict[str, float]:
        """When each of the execution's unheard tasks was last found waiting in its topic."""
        return self._since.get(execution_id, {})

    def look(self, execution_id: UUID, heard: dict[str, float], now: float) -> None:
        """Whether the execution's unheard tasks still wait. Found waiting, a task counts as
        waiting since `now` (`since`). Found taken, it counts as heard of `now` (in `heard`,
        the execution's heartbeats): its first heartbeat may be on its way, and it has a
        heartbeat timeout from now to arrive. Nothing changes when the broker cannot say."""
        if not self._sent.get(execution_id):
            return
        committed = self._read()
        if committed is None:
            return
        tasks = self._sent.get(execution_id) or {}  # a reset seen in the answer forgets
        for key, where in list(tasks.items()):
            if committed.get((where.group, where.partition), -1) > where.offset:
                heard[key] = now
                self.heard(execution_id, key)
            else:
                self._since.setdefault(execution_id, {})[key] = now

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except KafkaError as exc:
                log.debug("orchestrator: closing the admin client failed: %s", exc)

    def _read(self) -> Committed | None:
        at = self._clock()
        if at - self._read_at < FRESH_S:
            return self._committed
        if at < self._quiet_until:
            return None
        groups = {where.group for tasks in self._sent.values() for where in tasks.values()}
        try:
            if self._admin is None:
                self._admin = self._make_admin()
            answer = self._admin.list_group_offsets({group: None for group in groups})
        except (KafkaError, OSError) as exc:
            log.info("orchestrator: the runners' committed offsets are unknown (%s)", exc)
            self.close()
            self._quiet_until = self._clock() + BACKOFF_S
            return None
        committed: Committed = {
            (group, tp): int(om.offset)
            for group in groups
            for tp, om in (answer.get(group) or {}).items()
            if om is not None and om.offset is not None and om.offset >= 0
        }
        self._forget_reset(committed, groups)
        self._committed = committed
        self._read_at = self._clock()
        return committed

    def _forget_reset(self, committed: Committed, groups: set[str]) -> None:
        """A group offset lower than before, or gone: the log was started again. The tasks
        known on that partition were in the old one."""
        reset = {
            where
            for where, offset in self._committed.items()
            if where[0] in groups and committed.get(where, -1) < offset
        }
        if not reset:
            return
        log.warning(
            "orchestrator: the runners' committed offsets went back on %s; the tasks sent "
            "there before are judged by the queue timeout alone",
            ", ".join(f"{tp.topic}[{tp.partition}]" for _, tp in sorted(reset)),
        )
        for execution_id, tasks in list(self._sent.items()):
            for key, where in list(tasks.items()):
                if (where.group, where.partition) in reset:
                    self.heard(execution_id, key)  # no longer known: forgotten

    def _connect(self) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id="autoops-orchestrator-admin",
            bootstrap_timeout_ms=LOOK_TIMEOUT_MS,
            request_timeout_ms=LOOK_TIMEOUT_MS,
            reconnect_backoff_max_ms=kafka.RECONNECT_BACKOFF_MAX_MS,
        )
