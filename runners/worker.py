"""The runner process: takes the step tasks of one pool from Kafka, runs them, reports results.

Delivery follows docs/execution.md: a task's offset is committed when the runner takes it,
before the step runs, and each result is kept until the broker acknowledged it. Only the main
loop touches the task consumer (kafka-python consumers are not thread-safe). Steps run on a
thread pool; one clock thread sends heartbeats and enforces deadlines for all of them, one
thread reads control messages (cancellations) and one sends what the others report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from infra import artifacts, jsontext, kafka
from infra.errors import ConfigError
from infra.heartbeat import Heartbeat
from infra.secrets import CredentialError, Vault, redact, secret_strings
from infra.settings import Settings
from runners.nodes import StepContext, run_step
from runners.nodes.browser_sessions import BrowserSessions
from runners.nodes.desktop_screen import Desktop
from runners.nodes.dispatch import PURE
from runners.nodes.errors import StepError
from runners.nodes.jsonable import redact_json

log = logging.getLogger(__name__)

#: A stopped step whose thread has not returned for this long holds its slot for good.
ABANDONED_AFTER_S = 30.0
#: A step still running this long after it started is reported as taken (first heartbeat).
FIRST_BEAT_S = 0.05
SEEN_TASK_IDS = 100_000
"""How many taken task ids a runner remembers to drop redelivered duplicates."""
REMEMBERED_CANCELS = 10_000
MAX_MESSAGE_CHARS = 2_000
MAX_RAW_CHARS = 10_000
DRAIN_TIMEOUT_S = 15.0
"""How long a stopping runner tries to get its last results acknowledged."""
CANCEL_WAIT_S = 2.0
"""How long a stopping runner gives steps it cancelled to return."""
CONTROL_LOOKBACK = 1_000
"""Cancels per control partition a starting runner reads back (to know of ones sent before)."""
CONTROL_CATCH_UP_S = 10.0
"""Longest a starting runner reads back cancels before it takes tasks anyway."""
CONTROL_FETCH_WAIT_MS = 100
"""Fetch wait of the control consumer. Tansu answers an empty fetch only after the wait, so a
consumer fetches 1000/wait times a second while idle, each costing CPU in this process (beside
the task consumer's thread) and in the broker: cancels do not need 5 ms."""
_PAST_DEADLINE = "the step ran past its deadline"
_TEXT_FIELDS = ("task_id", "execution_id", "workspace_id", "node_id", "node_type")
_Errors = (kafka.KafkaError, OSError)


class StuckSteps(RuntimeError):
    """Every slot is held by a step that was stopped but does not return."""


class MalformedTask(ValueError):
    """A task message that does not follow the task contract."""


@dataclass(eq=False)
class _Job:
    """A taken task while it runs."""

    task: dict[str, Any]
    deadline: float  # epoch seconds
    heartbeat_s: float
    started_at: float = 0.0
    next_beat: float = 0.0  # monotonic seconds
    cancelled: threading.Event = field(default_factory=threading.Event)
    reported: bool = False
    reported_at: float = 0.0  # monotonic


def parse_task(raw: bytes | None, default_timeout_s: float, default_heartbeat_s: float) -> _Job:
    """Check a task message against the contract; MalformedTask says what is wrong."""
    try:
        task = jsontext.loads(raw or b"")
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedTask(f"not JSON: {exc}") from None
    if not isinstance(task, dict):
        raise MalformedTask("not a JSON object")
    bad = [k for k in _TEXT_FIELDS if not isinstance(task.get(k), str) or not task[k]]
    if bad:
        raise MalformedTask(f"missing or not text: {', '.join(bad)}")
    attempt = task.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise MalformedTask("attempt is not a positive integer")
    if not isinstance(task.get("config"), dict):
        raise MalformedTask("config is not an object")
    credentials = task.setdefault("credentials", {}) or {}
    if not isinstance(credentials, dict) or not all(
        isinstance(c, dict) and isinstance(c.get("ciphertext"), str) for c in credentials.values()
    ):
        raise MalformedTask("credentials is not an object of {kind, ciphertext}")
    task["credentials"] = credentials
    for name in ("deadline", "timeout_s", "heartbeat_s", "dispatched_at"):
        value = task.get(name)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if value is not None and not (ok and (name in ("deadline", "dispatched_at") or value > 0)):
            raise MalformedTask(f"{name} is not a positive number")
    deadline = task.get("deadline")
    if deadline is None:
        deadline = time.time() + (task.get("timeout_s") or default_timeout_s)
    return _Job(task, float(deadline), float(task.get("heartbeat_s") or default_heartbeat_s))


@dataclass(frozen=True)
class _Message:
    topic: str
    key: bytes | None
    value: bytes


class _Outbox:
    """Messages the broker has not acknowledged yet, oldest first; one sender drains it."""

    def __init__(self) -> None:
        self._items: deque[_Message] = deque()
        self._sending = 0
        self._cond = threading.Condition()

    def put(self, topic: str, key: str | None, value: dict[str, Any]) -> None:
        encoded = json.dumps(value, separators=(",", ":"), default=str).encode()
        with self._cond:
            self._items.append(_Message(topic, key.encode() if key else None, encoded))
            self._cond.notify_all()

    def take(self, timeout: float) -> list[_Message]:
        with self._cond:
            self._cond.wait_for(lambda: self._items, timeout)
            batch = list(self._items)
            self._items.clear()
            self._sending += len(batch)
            return batch

    def settle(self, batch: list[_Message], unsent: list[_Message]) -> None:
        """`batch` came back from the broker; `unsent` of it goes first in line again."""
        with self._cond:
            self._items.extendleft(reversed(unsent))
            self._sending -= len(batch)
            self._cond.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._items and not self._sending, timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items) + self._sending


class Runner:
    """Runs the steps of one pool: `Runner(settings, "default", 8).run(stop)` until `stop`."""

    def __init__(
        self, settings: Settings, pool: str | None = None, concurrency: int | None = None
    ) -> None:
        if settings.kafka_bootstrap is None:
            raise ConfigError("a runner needs AUTOOPS_KAFKA_BOOTSTRAP")
        self.bootstrap: str = settings.kafka_bootstrap
        self.settings = settings
        self.pool = pool or settings.runner_pool
        self.concurrency = concurrency or settings.runner_concurrency
        self.runner_id = f"{socket.gethostname()}:{os.getpid()}"
        self.ready = threading.Event()
        """Set once the runner has partitions to serve and reads control messages."""
        self._vault = Vault.from_settings(settings)
        self._artifacts = artifacts.from_settings(settings)
        #: What the pool keeps between steps (browser pages, the desktop's display), if anything.
        self._sessions: BrowserSessions | Desktop | None = None
        if self.pool == "browser":
            self._sessions = BrowserSessions(settings, self._artifacts)
        elif self.pool == "desktop":
            self._sessions = Desktop(settings, self._artifacts)
        self._outbox = _Outbox()
        self._lock = threading.Lock()
        self._running: dict[str, _Job] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._cancels: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self._slot_freed = threading.Event()
        self._clock_wake = threading.Event()
        self._control_ready = threading.Event()
        self._consumer: kafka.KafkaConsumer | None = None
        self._fetch_wait: kafka.FetchWait | None = None
        self._backoff = 0.2
        self._kafka_state = "connecting"
        self._assigned = 0  # task partitions held (for the heartbeat)
        self._beat: Callable[..., None] = (
            Heartbeat(settings.redis_url, f"runner:{self.pool}:{self.runner_id}")
            if settings.redis_url
            else lambda **_: None
        )

    @property
    def busy(self) -> int:
        """Steps whose thread has not returned yet (cancelled ones included)."""
        with self._lock:
            return len(self._running)

    def run(self, stop: threading.Event) -> None:
        """Take and run tasks until `stop` is set; then stop taking, let in-flight steps finish
        for `runner_shutdown_grace_s`, hand back the rest, send everything and leave the group."""
        halt = threading.Event()
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"runner-{self.pool}")
        helpers = [
            threading.Thread(target=loop, args=(halt,), name=f"runner-{name}", daemon=True)
            for name, loop in (
                ("send", self._send_loop),
                ("clock", self._clock_loop),
                ("control", self._control_loop),
            )
        ]
        for thread in helpers:
            thread.start()
        try:
            while not stop.is_set():
                self._round(executor, stop, taking=True)
            log.info("runner %s: stopping; %d steps in flight", self.runner_id, self.busy)
            grace_end = time.monotonic() + self.settings.runner_shutdown_grace_s
            while self._unreported() and time.monotonic() < grace_end:
                self._round(executor, stop, taking=False)
        finally:
            self._hand_back()
            if not self._outbox.wait_empty(DRAIN_TIMEOUT_S):
                log.error("runner: %d results were never acknowledged", len(self._outbox))
            self._close_consumer()
            halt.set()
            self._clock_wake.set()
            for thread in helpers:
                thread.join(DRAIN_TIMEOUT_S)
            executor.shutdown(wait=False, cancel_futures=True)
            if self._sessions is not None:
                self._sessions.close()

    # -- main loop: the only thread that touches the task consumer ---------------------------

    def _round(self, executor: ThreadPoolExecutor, stop: threading.Event, taking: bool) -> None:
        if self._consumer is None and not taking:
            self._slot_freed.wait(0.1)  # winding down without a broker: just wait for steps
            return
        try:
            if self._consumer is None:
                self._connect()
            assert self._consumer is not None
            self._slot_freed.clear()
            # Nothing is taken before the cancels sent until now are known.
            free = self.concurrency - self.busy if taking and self._control_ready.is_set() else 0
            if free <= 0 and taking and self._all_abandoned():
                # Every slot holds a step that was stopped (cancel, deadline) but never
                # returned: this runner takes nothing any more while it keeps its partitions.
                # Leave, so the group gives them to others; the supervisor starts a new one.
                raise StuckSteps(f"all {self.busy} steps ignore cancellation")
            if free > 0:
                self._take(self._consumer, executor, free)
            elif not self._slot_freed.wait(0.1):
                # Paused, yet polled: the group keeps us as a member while every slot is busy
                # (and a rebalance needs polls of some milliseconds to complete).
                self._consumer.pause(*self._consumer.assignment())
                self._rewind(self._consumer, self._poll(self._consumer, 10, 1))
            self._assigned = len(self._consumer.assignment())
            if self._assigned and self._control_ready.is_set():
                self.ready.set()
            self._backoff = 0.2
            self._kafka_state = "up"
        except _Errors as exc:
            log.warning("runner: broker unavailable (%s); reconnecting", exc)
            self._kafka_state = f"unavailable: {exc}"
            self._close_consumer()
            (stop if taking else self._slot_freed).wait(self._backoff)
            self._backoff = min(self._backoff * 2, 5.0)

    def _all_abandoned(self) -> bool:
        """Every slot has held a stopped step for a while (a step that just reported is
        still returning: not abandoned)."""
        with self._lock:
            jobs = list(self._running.values())
        limit = time.monotonic() - ABANDONED_AFTER_S
        return bool(jobs) and all(job.reported and job.reported_at < limit for job in jobs)

    def _connect(self) -> None:
        topic = kafka.tasks_topic(self.pool)
        kafka.ensure_topics(
            self.bootstrap,
            self.settings.kafka_partitions,
            list(dict.fromkeys([*kafka.all_topics(), topic])),
        )
        self._consumer = kafka.make_consumer(
            self.bootstrap,
            kafka.runner_group(self.pool),
            group_id=kafka.runner_group(self.pool),
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            group_timeout_ms=self.settings.kafka_group_timeout_ms,
            max_poll_records=self.concurrency,
        )
        self._consumer.subscribe([topic])
        self._fetch_wait = kafka.fetch_wait_of(
            self._consumer,
            self.settings.kafka_fetch_max_wait_ms,
            self.settings.kafka_idle_fetch_max_wait_ms,
            self.settings.kafka_idle_after_s,
        )

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._assigned = 0
        if consumer is not None:
            try:
                consumer.close(autocommit=False, timeout_ms=5000)
            except _Errors as exc:
                log.debug("runner: closing the consumer failed: %s", exc)

    @staticmethod
    def _poll(consumer: kafka.KafkaConsumer, timeout_ms: int, most: int) -> list[Any]:
        batches = consumer.poll(timeout_ms=timeout_ms, max_records=most)
        return [record for records in batches.values() for record in records]

    @staticmethod
    def _rewind(consumer: kafka.KafkaConsumer, records: list[Any]) -> None:
        """Give records back: the next poll returns them again."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            consumer.seek(tp, offset)

    def _take(self, consumer: kafka.KafkaConsumer, executor: ThreadPoolExecutor, free: int) -> None:
        consumer.resume(*consumer.paused())
        records = self._poll(consumer, 100, free)
        if self._fetch_wait is not None:
            self._fetch_wait.polled(bool(records))
        if not records:
            return
        taken = records[:free]
        self._rewind(consumer, records[free:])
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in taken:
            offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "", -1)
        parsed = [(record, self._parse(record)) for record in taken]
        # Pure steps start while the commit is on its way (a second run of one, should the
        # commit fail and the task go to another runner, changes nothing).
        for _, job in parsed:
            if isinstance(job, _Job) and job.task["node_type"] in PURE:
                self._start(job, executor)
        # Taken means committed: if this raises, no other step of the batch runs here and
        # the group hands it out again from the last commit.
        consumer.commit(offsets)
        for record, job in parsed:
            if isinstance(job, MalformedTask):
                self._dead_letter(record, job)
            elif job.task["node_type"] not in PURE:
                self._start(job, executor)

    def _parse(self, record: Any) -> _Job | MalformedTask:
        cfg = self.settings
        try:
            return parse_task(record.value, cfg.step_timeout_s, cfg.step_heartbeat_interval_s)
        except MalformedTask as exc:
            return exc

    def _dead_letter(self, record: Any, exc: MalformedTask) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        log.warning("runner: malformed task at %s goes to the DLQ: %s", where, exc)
        raw = (record.value or b"").decode("utf-8", "replace")[:MAX_RAW_CHARS]
        self._outbox.put(
            kafka.DLQ_TOPIC,
            record.key.decode("utf-8", "replace") if record.key else None,
            {
                "kind": "malformed_task",
                "error": {"type": "MalformedTask", "message": str(exc), "retryable": False},
                "raw": raw,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )

    def _start(self, job: _Job, executor: ThreadPoolExecutor) -> None:
        task = job.task
        if task["task_id"] in self._seen:
            self._seen.move_to_end(task["task_id"])
            log.info("runner: dropping task %s, taken already", task["task_id"])
            return
        self._seen[task["task_id"]] = None
        if len(self._seen) > SEEN_TASK_IDS:
            self._seen.popitem(last=False)
        job.started_at = time.time()
        # The first heartbeat comes soon: it tells the orchestrator a runner has the step,
        # so a runner that dies under it is noticed after the heartbeat timeout (a task never
        # heard of may just be waiting in its topic, and gets the longer queue timeout).
        job.next_beat = time.monotonic() + min(job.heartbeat_s, FIRST_BEAT_S)
        with self._lock:
            cancelled = bool(
                {(task["execution_id"], None), (task["execution_id"], task["task_id"])}
                & self._cancels.keys()
            )
            if not cancelled and job.started_at < job.deadline:
                self._running[task["task_id"]] = job
        if cancelled:
            self._fail(job, "Cancelled", "the step was cancelled before it started", False)
        elif job.started_at >= job.deadline:
            self._fail(job, "StepTimeout", "the deadline passed before the step started", True)
        else:
            self._clock_wake.set()
            executor.submit(self._execute, job)

    # -- step threads ---------------------------------------------------------------------------

    def _execute(self, job: _Job) -> None:
        try:
            self._report(job, self._outcome(job))
        except BaseException as exc:  # a bug here must not lose the step's result
            log.exception("runner: step %s failed unexpectedly", job.task["task_id"])
            self._fail(job, type(exc).__name__, str(exc), True)
        finally:
            with self._lock:
                self._running.pop(job.task["task_id"], None)
            self._slot_freed.set()

    def _outcome(self, job: _Job) -> dict[str, Any]:
        task = job.task
        secrets: dict[str, dict[str, Any]] = {}
        for name, credential in task["credentials"].items():
            try:
                secrets[name] = self._vault.decrypt(credential["ciphertext"])
            except (CredentialError, ValueError, KeyError, TypeError) as exc:
                reason = exc if isinstance(exc, CredentialError) else "not a credential"
                message = f"credential {name!r} of node {task['node_id']} cannot be used: {reason}"
                return self._failure(job, "CredentialError", message, False)
        # run_step redacts too; this pass also covers whatever escapes it.
        hidden = [s for secret in secrets.values() for s in secret_strings(secret)]
        ctx = StepContext(
            task=task,
            secrets=secrets,
            artifacts=self._artifacts,
            settings=self.settings,
            cancelled=job.cancelled,
            sessions=self._sessions,
        )
        try:
            output = redact_json(run_step(task, ctx), hidden)
        except Exception as exc:
            if time.time() >= job.deadline:  # whatever broke, the deadline did it first
                return self._failure(job, "StepTimeout", _PAST_DEADLINE, True)
            if isinstance(exc, StepError):
                details = redact_json(exc.details, hidden) if exc.details else None
                message = redact(exc.message, hidden)
                return self._failure(job, exc.type, message, exc.retryable, details)
            return self._failure(job, type(exc).__name__, redact(str(exc), hidden), True)
        if jsontext.too_deep(output):
            return self._failure(
                job, "OutputError", f"the output nests deeper than {jsontext.MAX_DEPTH} levels",
                False,
            )  # fmt: skip
        try:
            size = len(json.dumps(output, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            return self._failure(job, "OutputError", f"the output is not JSON: {exc}", False)
        if size > self.settings.output_inline_limit:
            output = self._artifacts.put_json(task["workspace_id"], output)
        return self._result(job, True, output, None)

    # -- reporting (any thread) -----------------------------------------------------------------

    def _message(self, kind: str, job: _Job) -> dict[str, Any]:
        t = job.task
        return {
            "kind": kind,
            "task_id": t["task_id"],
            "execution_id": t["execution_id"],
            "node_id": t["node_id"],
            "attempt": t["attempt"],
            "runner_id": self.runner_id,
        }

    def _result(self, job: _Job, ok: bool, output: Any, error: Any) -> dict[str, Any]:
        return self._message("result", job) | {
            "ok": ok,
            "output": output,
            "error": error,
            "started_at": job.started_at,
            "finished_at": time.time(),
        }

    def _failure(
        self,
        job: _Job,
        kind: str,
        message: str,
        retryable: bool,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        error: dict[str, Any] = {"type": kind, "message": message, "retryable": retryable}
        if details:
            error["details"] = details
        return self._result(job, False, None, error)

    def _report(self, job: _Job, message: dict[str, Any]) -> bool:
        """Queue the one final message of a step; False if it had one already."""
        with self._lock:
            if job.reported:
                return False
            job.reported = True
            job.reported_at = time.monotonic()
            self._outbox.put(kafka.RESULTS_TOPIC, job.task["execution_id"], message)
            return True

    def _fail(self, job: _Job, kind: str, message: str, retryable: bool) -> None:
        """Report a failure now (timeout, cancel) and tell the step to stop."""
        self._report(job, self._failure(job, kind, message, retryable))
        job.cancelled.set()

    def _unreported(self) -> list[_Job]:
        with self._lock:
            return [job for job in self._running.values() if not job.reported]

    def _hand_back(self) -> None:
        """Steps still running at shutdown go back to the orchestrator, to run elsewhere."""
        jobs = self._unreported()
        for job in jobs:
            message = self._message("handback", job) | {"started_at": job.started_at}
            if self._report(job, message):
                log.info("runner: handing back %s", job.task["task_id"])
            job.cancelled.set()
        end = time.monotonic() + CANCEL_WAIT_S
        while jobs and self.busy and time.monotonic() < end:
            self._slot_freed.clear()
            self._slot_freed.wait(0.05)

    # -- helper threads -------------------------------------------------------------------------

    def _send_loop(self, halt: threading.Event) -> None:
        producer: kafka.KafkaProducer | None = None
        backoff = 0.2
        while True:
            batch = self._outbox.take(timeout=0.1)
            if not batch:
                if halt.is_set():
                    break
                continue
            unsent = batch
            try:
                if producer is None:
                    producer = kafka.make_producer(self.bootstrap, f"autoops-runner-{self.pool}")
                futures = [producer.send(m.topic, key=m.key, value=m.value) for m in batch]
                producer.flush(
                    timeout=kafka.flush_timeout_s(self.settings.step_heartbeat_timeout_s)
                )
                unsent = [m for m, f in zip(batch, futures, strict=True) if not f.succeeded()]
            except _Errors as exc:
                log.warning("runner: sending %d messages failed: %s", len(batch), exc)
            self._outbox.settle(batch, unsent)
            if unsent:
                _close_producer(producer)
                producer = None
                if halt.is_set():
                    break
                halt.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                self._recreate_topics({m.topic for m in unsent})
            else:
                backoff = 0.2
        _close_producer(producer)

    def _recreate_topics(self, topics: set[str]) -> None:
        """A restarted broker may have lost the topics (Tansu keeps them in memory only)."""
        try:
            kafka.ensure_topics(self.bootstrap, self.settings.kafka_partitions, sorted(topics))
        except _Errors as exc:
            log.debug("runner: cannot check topics: %s", exc)

    def _clock_loop(self, halt: threading.Event) -> None:
        """Heartbeats of long steps and deadlines of all, for every running step at once; and
        the process's own heartbeat (Redis I/O stays off the main loop)."""
        while not halt.is_set():
            self._clock_wake.clear()
            self._beat(
                kafka=self._kafka_state, pool=self.pool, running=self.busy, assigned=self._assigned
            )
            wall, mono = time.time(), time.monotonic()
            wake_in = 1.0
            for job in self._unreported():
                if wall >= job.deadline:
                    self._fail(job, "StepTimeout", _PAST_DEADLINE, True)
                    continue
                if mono >= job.next_beat:
                    with self._lock:
                        if not job.reported:
                            self._outbox.put(
                                kafka.RESULTS_TOPIC,
                                job.task["execution_id"],
                                self._message("heartbeat", job),
                            )
                    job.next_beat += job.heartbeat_s
                    if job.next_beat <= mono:
                        job.next_beat = mono + job.heartbeat_s
                wake_in = min(wake_in, job.next_beat - mono, job.deadline - wall)
            self._clock_wake.wait(max(wake_in, 0.005))

    def _control_loop(self, halt: threading.Event) -> None:
        """Cancellations: every runner reads every partition, without a group, from the last
        cancels before it started (a cancel sent while no runner was up still stops the
        task it names), and takes no task until it has read up to where it began."""
        consumer: kafka.KafkaConsumer | None = None
        caught_up: dict[TopicPartition, int] = {}
        catch_up_until = 0.0
        backoff = 0.2
        while not halt.is_set():
            try:
                if consumer is None:
                    consumer = kafka.make_consumer(
                        self.bootstrap,
                        f"autoops-runner-{self.pool}-control",
                        fetch_max_wait_ms=CONTROL_FETCH_WAIT_MS,
                    )
                    partitions = consumer.partitions_for_topic(kafka.CONTROL_TOPIC)
                    if not partitions:  # the main loop creates the topic
                        consumer.close()
                        consumer = None
                        halt.wait(0.2)
                        continue
                    tps = [TopicPartition(kafka.CONTROL_TOPIC, p) for p in sorted(partitions)]
                    consumer.assign(tps)
                    caught_up = {tp: int(o) for tp, o in consumer.end_offsets(tps).items()}
                    firsts = consumer.beginning_offsets(tps)
                    for tp in tps:
                        back = max(0, int(firsts[tp]), caught_up[tp] - CONTROL_LOOKBACK)
                        consumer.seek(tp, back)
                    catch_up_until = time.monotonic() + CONTROL_CATCH_UP_S
                for records in consumer.poll(timeout_ms=100).values():
                    for record in records:
                        self._on_control(record.value)
                if caught_up and self._caught_up(consumer, caught_up, catch_up_until):
                    caught_up = {}
                    self._control_ready.set()
                backoff = 0.2
            except Exception as exc:  # a broker error or a surprise: never lose this thread
                if isinstance(exc, _Errors):
                    log.warning("runner: control topic unavailable (%s); reconnecting", exc)
                else:
                    log.exception("runner: reading the control topic failed; reconnecting")
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        consumer.close(timeout_ms=1000)
                consumer = None
                halt.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        if consumer is not None:
            consumer.close(timeout_ms=1000)

    @staticmethod
    def _caught_up(
        consumer: kafka.KafkaConsumer, targets: dict[TopicPartition, int], until: float
    ) -> bool:
        """Read up to where it began (or to the end, should the broker have lost data and
        the end moved back); after CONTROL_CATCH_UP_S, go on without (cancels still stop
        running steps, only ones sent before this runner started may be missed)."""
        if time.monotonic() > until:
            log.warning("runner: cancels sent before start not all read; taking tasks anyway")
            return True
        ends = consumer.end_offsets(list(targets))
        return all(
            (consumer.position(tp) or 0) >= min(target, int(ends.get(tp, 0)))
            for tp, target in targets.items()
        )

    def _on_control(self, raw: bytes | None) -> None:
        try:
            message = jsontext.loads(raw or b"")
        except ValueError:
            message = None
        if isinstance(message, dict) and message.get("kind") == "release":
            execution_id = message.get("execution_id")
            sessions = self._sessions
            if isinstance(execution_id, str) and sessions and sessions.has_session(execution_id):
                # Off this thread: closing a page must not hold up the cancels behind it.
                threading.Thread(target=sessions.release, args=(execution_id,), daemon=True).start()
            return
        if not isinstance(message, dict) or message.get("kind") != "cancel":
            log.warning("runner: ignoring control message %.200r", raw)
            return
        execution_id, task_id = message.get("execution_id"), message.get("task_id")
        if not isinstance(execution_id, str) or not isinstance(task_id, str | None):
            log.warning("runner: ignoring malformed cancel %.200r", raw)
            return
        with self._lock:
            self._cancels[(execution_id, task_id)] = None
            if len(self._cancels) > REMEMBERED_CANCELS:
                self._cancels.popitem(last=False)
            jobs = [
                job
                for job in self._running.values()
                if job.task["execution_id"] == execution_id
                and task_id in (None, job.task["task_id"])
            ]
        for job in jobs:
            log.info("runner: cancelling %s", job.task["task_id"])
            self._fail(job, "Cancelled", "the step was cancelled", False)


def _close_producer(producer: kafka.KafkaProducer | None) -> None:
    try:
        if producer is not None:
            producer.close(timeout=1)
    except _Errors as exc:
        log.debug("runner: closing the producer failed: %s", exc)
