"""Tasks still waiting in their topic: the runners' consumer group vouches for them.

A step sent to runners and never heard of (no heartbeat, no result) is either waiting behind
busy runners or lost: its runner died between taking it and its first heartbeat, or the
broker lost it. By time alone (the queue timeout) the two look the same, so a backlog longer
than a few queue timeouts sent waiting steps again and again and, past their free
redeliveries, failed steps no runner had taken. Runners commit a task's offset in their
pool's group before they run it, so the group's committed offset tells them apart: at or
below the task's offset, no runner has taken it and the topic still holds it for the next
one (it counts as waiting from that read); past it, a runner has it (it counts as heard of
then, and its heartbeats speak for it from then on).

A thread of its own reads the groups' committed offsets, once a second while a known task's
queue timeout is near (`lead_s` ahead), so the orchestrator's loop never waits for the
broker; a read the broker does not answer only leaves the tasks to the queue timeout.

Only tasks this process sent and the broker acknowledged are known (the offset comes with
the acknowledgement), and only while nothing says the log they were written to may be gone:
`forget_all` (a new producer, a consumer that reconnected), an acknowledged offset not above
an earlier one of its partition, or a group's committed offset that went back all forget the
tasks concerned. Unknown tasks are judged by the queue timeout alone, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from kafka import TopicPartition

from infra import kafka

log = logging.getLogger(__name__)

#: How often the thread looks whether a read is needed (and reads at most), at the most.
EVERY_S = 1.0
#: How long before a known task's queue timeout its group's offsets are read (at most).
LEAD_S = 10.0
#: After a read the broker did not answer, how long before the next try.
BACKOFF_S = 2.0
#: How long one read may wait for the broker (connecting, then each request).
READ_TIMEOUT_MS = 5000

Committed = dict[tuple[str, TopicPartition], int]


@dataclass
class Sent:
    group: str
    partition: TopicPartition
    offset: int
    #: When it was acknowledged, then when a read last found it waiting (`found`): its queue
    #: timeout counts from there.
    since: float
    found: bool = False


class WaitingTasks:
    def __init__(
        self,
        bootstrap: str,
        queue_timeout_s: float,
        clock: Callable[[], float] = time.time,
        admin: Callable[[], Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._queue_s = queue_timeout_s
        self._lead_s = min(LEAD_S, queue_timeout_s / 2)
        #: Several reads fit in the lead: one the broker is slow to answer is not the last.
        self._every_s = min(EVERY_S, self._lead_s / 4)
        self._clock = clock
        self._make_admin = admin or self._connect
        self._admin: Any = None
        self._lock = threading.Lock()
        #: execution → "<node>:<attempt>" → where its task is.
        self._sent: dict[UUID, dict[str, Sent]] = {}
        #: execution → "<node>:<attempt>" → when a read found it taken (until `look` hands it on).
        self._taken: dict[UUID, dict[str, float]] = {}
        #: The highest acknowledged offset of each partition.
        self._high: dict[TopicPartition, int] = {}
        self._committed: Committed = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the orchestrator's loop -------------------------------------------------------------

    def sent(self, task: dict[str, Any], metadata: Any) -> None:
        """A task the broker acknowledged (`metadata`: its RecordMetadata)."""
        tp = TopicPartition(metadata.topic, metadata.partition)
        offset = int(metadata.offset)
        where = Sent(
            kafka.runner_group(str(task.get("pool") or "default")),
            tp,
            offset,
            self._clock(),
        )
        key = f"{task['node_id']}:{task['attempt']}"
        with self._lock:
            high = self._high.get(tp)
            if high is not None and offset <= high:
                log.warning(
                    "orchestrator: %s[%d] acknowledged offset %d after %d: the log started "
                    "again; the tasks sent there before are judged by the queue timeout alone",
                    tp.topic, tp.partition, offset, high,
                )  # fmt: skip
                self._drop(lambda w: w.partition == tp)
            self._high[tp] = offset
            self._sent.setdefault(UUID(str(task["execution_id"])), {})[key] = where
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="autoops-waiting-tasks", daemon=True
            )
            self._thread.start()

    def heard(self, execution_id: UUID, key: str) -> None:
        """A runner spoke for the step: it has the task."""
        with self._lock:
            self._forget_task(execution_id, key)

    def forget(self, execution_id: UUID) -> None:
        with self._lock:
            self._sent.pop(execution_id, None)
            self._taken.pop(execution_id, None)

    def forget_all(self) -> None:
        """The log the tasks were written to may be gone (a broker that came back empty
        starts its offsets again): what was known of them says nothing any more."""
        with self._lock:
            for known in (self._sent, self._taken, self._high, self._committed):
                known.clear()

    def known(self) -> list[UUID]:
        with self._lock:
            return list(self._sent)

    def since(self, execution_id: UUID) -> dict[str, float]:
        """When each of the execution's unheard tasks was last found waiting in its topic."""
        with self._lock:
            tasks = self._sent.get(execution_id, {})
            return {key: where.since for key, where in tasks.items() if where.found}

    def look(self, execution_id: UUID, heard: dict[str, float]) -> None:
        """Hand on the execution's tasks found taken since the last look: each counts as
        heard of when it was found (in `heard`, the execution's heartbeats). Its first
        heartbeat may be on its way; from then it has a heartbeat timeout to arrive."""
        with self._lock:
            taken = self._taken.pop(execution_id, {})
        for key, at in taken.items():
            heard[key] = max(heard.get(key, at), at)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_TIMEOUT_MS / 1000 * 3)

    # -- the reading thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                wait = self._every_s
                if self._wanted() and not self.read():
                    wait = max(wait, min(BACKOFF_S, self._lead_s / 2))
                self._stop.wait(wait)
        finally:
            admin, self._admin = self._admin, None
            if admin is not None:
                _close(admin)

    def _wanted(self) -> bool:
        soon = self._clock() + self._lead_s - self._queue_s
        with self._lock:
            return any(w.since <= soon for tasks in self._sent.values() for w in tasks.values())

    def read(self) -> bool:
        """Read the committed offsets of the groups of known tasks, and sort the tasks:
        still waiting (from the moment of the read) or taken. False if the broker could not
        say (nothing changes then)."""
        with self._lock:
            groups = {w.group for tasks in self._sent.values() for w in tasks.values()}
        if not groups:
            return True
        at = self._clock()  # before asking: "not taken yet" holds at least from here
        try:
            if self._admin is None:
                self._admin = self._make_admin()
            answer = self._admin.list_group_offsets({group: None for group in groups})
        except Exception as exc:  # whatever the client raises: the queue timeout decides
            log.info("orchestrator: the runners' committed offsets are unknown (%s)", exc)
            return False
        committed: Committed = {
            (group, tp): int(om.offset)
            for group in groups
            for tp, om in (answer.get(group) or {}).items()
            if om is not None and om.offset is not None and om.offset >= 0
        }
        with self._lock:
            self._sort(committed, groups, at)
        return True

    def _sort(self, committed: Committed, groups: set[str], at: float) -> None:
        went_back = {
            where
            for where, offset in self._committed.items()
            if where[0] in groups and committed.get(where, -1) < offset
        }
        if went_back:
            log.warning(
                "orchestrator: the runners' committed offsets went back on %s; the tasks sent "
                "there before are judged by the queue timeout alone",
                ", ".join(f"{tp.topic}[{tp.partition}]" for _, tp in sorted(went_back)),
            )
            self._drop(lambda w: (w.group, w.partition) in went_back)
        self._committed = {w: o for w, o in self._committed.items() if w[0] not in groups}
        self._committed.update(committed)
        for execution_id, tasks in list(self._sent.items()):
            for key, where in list(tasks.items()):
                if committed.get((where.group, where.partition), -1) > where.offset:
                    self._forget_task(execution_id, key)
                    self._taken.setdefault(execution_id, {})[key] = at
                else:
                    where.since, where.found = at, True

    def _drop(self, matches: Callable[[Sent], bool]) -> None:
        for execution_id, tasks in list(self._sent.items()):
            for key in [k for k, where in tasks.items() if matches(where)]:
                self._forget_task(execution_id, key)

    def _forget_task(self, execution_id: UUID, key: str) -> None:
        tasks = self._sent.get(execution_id)
        if tasks is not None and tasks.pop(key, None) is not None and not tasks:
            del self._sent[execution_id]

    def _connect(self) -> kafka.AdminClient:
        return kafka.AdminClient(
            bootstrap_servers=self._bootstrap,
            client_id="autoops-orchestrator-admin",
            bootstrap_timeout_ms=READ_TIMEOUT_MS,
            request_timeout_ms=READ_TIMEOUT_MS,
            reconnect_backoff_max_ms=kafka.RECONNECT_BACKOFF_MAX_MS,
        )


def _close(admin: Any) -> None:
    try:
        admin.close()
    except Exception as exc:  # closing at the end: nothing to do about it
        log.debug("orchestrator: closing the admin client failed: %s", exc)
