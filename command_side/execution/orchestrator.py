"""The orchestrator: the process manager that moves executions forward.

It consumes `autoops.execution.events` (new executions, finished children, cancels) and
`autoops.runner.results` (step results, heartbeats) in one consumer group, so executions are
partitioned by id across instances. Per poll it applies everything to the Execution
aggregates (cached), decides, and saves every touched aggregate in one transaction (with the
timers below); the tasks it decided leave only afterwards, sent by the orchestrator itself
from the committed events. Offsets are committed after the save, so a kill at any instant
re-reads what was not committed yet, and re-applying it is a no-op (reports of superseded or
finished attempts are ignored).

Durable timers: `autoops_execution_runs` holds one row per unfinished execution with the
time it next needs a look (retry backoff, delay, step deadline, heartbeat lapse, execution
deadline) and whether it is queued or running (per-workflow concurrency). Rows follow the
event log: a missing row is recreated from `ExecutionStarted` on the topic, a row of a
finished execution is deleted after its `ExecutionFinished` is saved. A stale `due` only
makes a look happen early or, bounded by the heartbeat timeout, late; never lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent
from kafka import KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from command_side.errors import NotFound
from command_side.execution.aggregate import Execution, Pinned, StepProblem, as_json
from command_side.execution.dispatch import task_message
from command_side.execution.service import ExecutionService
from command_side.execution.store import ExecutionStore, Statement
from command_side.execution.waiting import WaitingTasks
from command_side.store import WorkflowStore
from infra import jsontext, kafka

log = logging.getLogger(__name__)

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS autoops_execution_runs (
    execution_id uuid PRIMARY KEY,
    workflow_id text NOT NULL,
    state text NOT NULL,              -- queued | running
    max_concurrency int,
    partition int NOT NULL,
    due double precision NOT NULL,    -- epoch seconds
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS autoops_execution_runs_due
    ON autoops_execution_runs (partition, due);
CREATE INDEX IF NOT EXISTS autoops_execution_runs_queued
    ON autoops_execution_runs (workflow_id, state, created_at);
"""
#: Where its ExecutionStarted is in the event log: queues admit in the order starts committed
#: (rows of one poll are inserted partition by partition, at one instant); rows from before
#: the column existed (NULL) are older than any, and go first. Added only where it is missing:
#: an ALTER TABLE takes the table's strongest lock even when it changes nothing, and would
#: stall the orchestrators already running each time another one starts.
RUNS_POSITION_DDL = "ALTER TABLE autoops_execution_runs ADD COLUMN position bigint"
RUNS_HAS_POSITION = """SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'autoops_execution_runs'
      AND column_name = 'position'"""
DDL_LOCK = zlib.crc32(b"autoops.execution-runs-ddl")
ACTOR = "orchestrator"
EVENTS_TOPIC = kafka.events_topic("execution")
RESULTS_TOPIC = "autoops.runner.results"
RACE_RETRIES = 5
#: Longest an unfinished execution goes without a look (bounds a stale `due` after a crash).
MAX_QUIET_S = 300.0
#: How often a parent waiting for children looks whether one ended unheard.
CHILD_CHECK_S = 30.0
#: How often queues with free slots are admitted without a finish to trigger it.
QUEUE_SWEEP_S = 2.0
#: Offsets are committed at most this often (and at a clean stop). Each commit is a request to
#: the broker, and one step at a time brings a batch every few milliseconds (its result, then
#: the relay's copies of its events): about 9 % of the orchestrator's CPU in a chain of steps
#: (session 13, bench/RESULTS.md). After a kill, a rebalance or a broker error, the next owner
#: of a partition re-reads up to this much more, and re-reading is harmless.
COMMIT_EVERY_S = 0.2

Work = OrderedDict[UUID, list[tuple[str, dict[str, Any]]]]
Touched = dict[UUID, "Execution"]


@dataclass(frozen=True, kw_only=True)
class OrchestratorConfig:
    database_url: str
    eventsourcing_env: dict[str, str]
    bootstrap: str
    partitions: int
    artifact_root: str
    #: An S3-compatible bucket (`s3://bucket/prefix`) instead of `artifact_root`, and its endpoint.
    artifact_s3_url: str | None = None
    artifact_s3_endpoint: str | None = None
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    queue_timeout_s: float = 120.0
    step_timeout_s: float = 3600.0
    #: Outputs of steps completed here (INLINE) larger than this, as JSON, go to the
    #: artifact store, as a runner's do (`AUTOOPS_OUTPUT_INLINE_LIMIT`).
    output_inline_limit: int = 64 * 1024
    batch_size: int = 500
    fetch_max_wait_ms: int = 5
    #: The fetch wait once the topics have been quiet for `idle_after_s` (`kafka.FetchWait`).
    idle_fetch_max_wait_ms: int = 100
    idle_after_s: float = 5.0
    group_timeout_ms: int = 6000
    timer_poll_s: float = 0.05


def partition_of(execution_id: str, partitions: int) -> int:
    """The Kafka partition of a key, as kafka-python's default partitioner picks it."""
    return int(murmur2(execution_id.encode()) & 0x7FFFFFFF) % partitions


class StoreSurroundings:
    """What decisions need from the world: credentials, other workflows, artifact contents."""

    def __init__(self, service: ExecutionService, config: OrchestratorConfig) -> None:
        from infra.artifacts import ArtifactStore, FileArtifactStore, S3ArtifactStore

        self._service = service
        self._artifacts: ArtifactStore = (
            S3ArtifactStore(config.artifact_s3_url, config.artifact_s3_endpoint)
            if config.artifact_s3_url
            else FileArtifactStore(Path(config.artifact_root))
        )
        self.heartbeat_s = config.heartbeat_interval_s
        self.step_timeout_s = config.step_timeout_s
        self._inline_limit = config.output_inline_limit

    def resolve(self, workspace_id: str, value: Any) -> Any:
        if isinstance(value, dict) and "$artifact" in value:
            try:
                return self._artifacts.resolve(workspace_id, value)
            except (OSError, ValueError) as exc:
                raise StepProblem("ArtifactMissing", f"a recorded output is gone: {exc}") from exc
        return value

    def keep(self, workspace_id: str, value: Any) -> Any:
        kept, size = as_json(value)
        if size <= self._inline_limit:
            return kept
        try:
            return self._artifacts.put_json(workspace_id, kept)
        except (OSError, ValueError) as exc:  # ArtifactError: the store (or S3) failed
            raise StepProblem(
                "ArtifactError", f"the output could not be stored: {exc}", retryable=True
            ) from exc

    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        return self._service.credentials(workspace_id, names)

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        try:
            pinned, problems = self._service.checked(workspace_id, workflow_id, version)
        except (NotFound, ValueError) as exc:
            raise StepProblem("WorkflowNotFound", str(exc)) from None
        except Exception as exc:  # ValidationFailed: not published
            raise StepProblem("WorkflowNotFound", str(exc)) from None
        if problems:
            # What would stop it being started on its own stops it here too (a plain cycle
            # would leave the child, and its parent, waiting for ever).
            listed = "; ".join(p.message for p in problems)
            raise StepProblem(
                "WorkflowInvalid",
                f"workflow {workflow_id} version {pinned.version} cannot run: {listed}",
            )
        triggers = sorted(n for n, v in pinned.nodes.items() if v["type"] == "trigger.manual")
        if not triggers:
            raise StepProblem(
                "WorkflowNotFound", f"workflow {workflow_id} has no trigger.manual to start"
            )
        return Pinned(pinned.workflow_id, pinned.version, pinned.nodes, pinned.edges, triggers[0])


class Orchestrator:
    def __init__(
        self,
        config: OrchestratorConfig,
        heartbeat: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._heartbeat = heartbeat or (lambda **_: None)
        self._clock = clock
        self.store = ExecutionStore(env=config.eventsourcing_env)
        self.workflows = WorkflowStore(env=config.eventsourcing_env)
        self.service = ExecutionService(self.store, self.workflows)
        self.env = StoreSurroundings(self.service, config)
        self._cache: OrderedDict[UUID, Execution] = OrderedDict()
        #: "<execution>:<node>:<attempt>" → when a heartbeat or the orchestrator's start.
        self._heard: dict[UUID, dict[str, float]] = {}
        self._assigned: set[int] = set()
        #: partition → since when this instance has it (heard the heartbeats of its steps).
        self._owned_since: dict[int, float] = {}
        self._partitions = config.partitions
        self._verified: set[UUID] = set()
        self._gone: list[UUID] = []
        self._lagging = False
        self._next_sweep = 0.0
        self._producer: kafka.KafkaProducer | None = None
        #: Tasks sent since the last flush (with their futures), to check they arrived.
        self._sent: list[tuple[Any, dict[str, Any]]] = []
        #: Tasks the broker acknowledged that no runner spoke for yet: whether they still wait.
        self._waiting = WaitingTasks(config.bootstrap, config.queue_timeout_s, clock=clock)
        self._send_failures = 0
        self.ready = threading.Event()
        self.saves = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        cfg = self.config
        with psycopg.connect(cfg.database_url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                conn.execute(RUNS_DDL)
                if conn.execute(RUNS_HAS_POSITION).fetchone() is None:
                    conn.execute(RUNS_POSITION_DDL)
            while not stop.is_set():
                try:
                    self._consume(conn, stop)
                except (KafkaError, OSError) as exc:
                    log.warning("orchestrator: broker unavailable (%s); retrying", exc)
                    self._heartbeat(kafka=f"unavailable: {exc}")
                    stop.wait(1.0)
        self._waiting.close()
        self.store.close()
        self.workflows.close()

    def _consume(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        cfg = self.config
        # Connecting again: the broker may have come back empty, its offsets started again.
        self._waiting.forget_all()
        kafka.ensure_topics(cfg.bootstrap, cfg.partitions)
        consumer = KafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id="autoops-orchestrator",
            client_id="autoops-orchestrator",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
            session_timeout_ms=cfg.group_timeout_ms,
            heartbeat_interval_ms=max(100, cfg.group_timeout_ms // 3),
            # Tansu makes a join wait for every member up to the group's rebalance timeout,
            # which kafka-python takes from this: keep it short (a batch takes far less).
            max_poll_interval_ms=max(cfg.group_timeout_ms, 10_000),
            max_poll_records=cfg.batch_size,
            # Partition p of both topics must go to the same instance: range assignment.
            partition_assignment_strategy=(RangePartitionAssignor,),
            reconnect_backoff_max_ms=kafka.RECONNECT_BACKOFF_MAX_MS,
            metrics_enabled=kafka.METRICS,
        )
        consumer.subscribe([EVENTS_TOPIC, RESULTS_TOPIC])
        self._partitions = len(consumer.partitions_for_topic(RESULTS_TOPIC) or ()) or (
            cfg.partitions
        )
        fetch_wait = kafka.fetch_wait_of(
            consumer, cfg.fetch_max_wait_ms, cfg.idle_fetch_max_wait_ms, cfg.idle_after_s
        )
        catch_up = CatchUp()
        try:
            next_timers = 0.0
            commits = Commits(COMMIT_EVERY_S)
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=int(cfg.timer_poll_s * 1000))
                self._watch(consumer)
                if self._assigned:
                    self.ready.set()
                records = [r for batch in polled.values() for r in batch]
                fetch_wait.polled(bool(records))
                self._lagging = catch_up.behind(consumer) or len(records) >= cfg.batch_size
                if records:
                    self.handle(conn, records)
                    self._flush()
                    commits.handled()
                if commits.due(time.monotonic()):
                    # Not waited for: the next poll starts at once. A commit not made or lost
                    # with a kill re-reads batches whose effects are saved, and applying them
                    # again is a no-op (DESIGN: idempotent consumers).
                    consumer.commit_async(callback=commits.answered)
                    commits.sent(time.monotonic())
                now = self._clock()
                if now >= next_timers and self._assigned:
                    self.fire_timers(conn, now)
                    self._flush()
                    next_timers = now + cfg.timer_poll_s
                self._heartbeat(kafka="up", assigned=len(self._assigned))
            if commits.pending:
                # A clean stop: what was handled is not read again by the next owner. Not in
                # `finally`: after a failed batch the positions are past what was not saved.
                try:
                    consumer.commit(timeout_ms=5000)
                except KafkaError as exc:
                    log.info("orchestrator: the last offset commit failed (%s)", exc)
        finally:
            try:
                consumer.close()
                if self._producer is not None:
                    self._producer.close(timeout=5)
            except KafkaError as exc:
                log.debug("orchestrator: closing the Kafka clients failed: %s", exc)
            self._producer = None
            self._sent.clear()

    # -- one batch ---------------------------------------------------------------------------

    def handle(self, conn: psycopg.Connection, records: Iterable[Any]) -> None:
        """Apply a batch of Kafka records (events and runner reports) and save once."""
        now = self._clock()
        work: Work = OrderedDict()
        new_runs: list[tuple[UUID, dict[str, Any]]] = []
        for record in records:
            if record.topic == EVENTS_TOPIC and _type_header(record) not in (None, *WANTED):
                continue  # most events of the topic are this orchestrator's own doing
            message = _decode(record.value)
            if message is None:
                log.warning("orchestrator: skipping an undecodable message at %s", record.offset)
                continue
            if record.topic == EVENTS_TOPIC:
                kind = str(message.get("type", "")).removeprefix("execution.")
                eid = _uuid(message.get("aggregate_id"))
                if eid is None:
                    continue
                if kind == "ExecutionStarted":
                    data = message.get("data") or {}
                    new_runs.append((eid, {**data, "log_position": message.get("position")}))
                elif kind == "ExecutionFinished":
                    work.setdefault(eid, []).append(("finished", {}))
                continue
            eid = _uuid(message.get("execution_id"))
            if eid is None:
                log.warning("orchestrator: a runner report without execution id: %.200s", message)
                continue
            key = f"{message.get('node_id')}:{message.get('attempt')}"
            self._waiting.heard(eid, key)
            if message.get("kind") == "heartbeat":
                self._heard.setdefault(eid, {})[key] = now
                continue
            work.setdefault(eid, []).append(("report", message))
        if new_runs:
            free = [(e, d) for e, d in new_runs if not d.get("max_concurrency")]
            limited = [(e, d) for e, d in new_runs if d.get("max_concurrency")]
            if free:
                self._insert_runs(conn, free, now, state="running")
            if limited:
                self._insert_runs(conn, limited, now)
            admitted = [e for e, _ in free]
            for workflow_id in {str(d.get("workflow_id")) for _, d in limited}:
                admitted += self._admit_queued(conn, workflow_id)
            for eid in admitted:
                # Others' partitions admit theirs on their next look (due now).
                if self._mine(eid):
                    work.setdefault(eid, []).insert(0, ("admit", {}))
        self._process(conn, work, now)

    def _send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        try:
            if self._producer is None:
                self._producer = kafka.make_producer(self.config.bootstrap, "autoops-orchestrator")
            future = self._producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
        except KafkaError as exc:  # e.g. no metadata for a topic the broker lost
            log.warning("orchestrator: a task could not be sent (%s)", exc)
            self._send_failures += 1
            return
        self._sent.append((future, value))

    def _flush(self) -> None:
        """Tasks sent before offsets are committed: a kill in between re-reads the batch.

        When sends failed, the producer is replaced: a broker that restarted empty no longer
        knows its id, and kafka-python then fails every later send of that producer (a fatal
        state it never leaves), so no task would reach a runner again. The tasks lost go
        again, as a new attempt, when no runner reports taking them (the queue timeout);
        never re-sent here, since a send reported failed may still have been stored, and a
        task reaches runners at most once."""
        failed, self._send_failures = self._send_failures, 0
        try:
            if self._producer is not None:
                self._producer.flush(timeout=kafka.flush_timeout_s(self.config.heartbeat_timeout_s))
            for future, task in self._sent:
                if not future.succeeded():
                    failed += 1
                elif self._mine(_uuid(task.get("execution_id"))):
                    # Another instance's execution (a child's first task comes from its
                    # parent's owner, a parent's next one from its child's): its owner
                    # judges it by the queue timeout alone.
                    self._waiting.sent(task, future.value)
        except KafkaError as exc:
            log.warning("orchestrator: flushing tasks failed (%s)", exc)
            failed += len(self._sent) or 1
        finally:
            self._sent.clear()
        if not failed:
            return
        log.warning(
            "orchestrator: %d task sends failed; a new producer takes over (they go again "
            "after the queue timeout)",
            failed,
        )
        self._drop_producer()
        try:
            kafka.ensure_topics(self.config.bootstrap, self.config.partitions)
        except KafkaError as exc:
            log.warning("orchestrator: cannot recreate topics yet (%s)", exc)

    def _drop_producer(self) -> None:
        # The broker may have come back empty (why sends fail): its offsets started again.
        self._waiting.forget_all()
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except KafkaError as exc:
                log.debug("orchestrator: closing the producer failed: %s", exc)

    def _mine(self, eid: UUID | None) -> bool:
        return eid is not None and partition_of(str(eid), self._partitions) in self._assigned

    def _process(self, conn: psycopg.Connection, work: Work, now: float) -> None:
        """Apply `work` to fresh aggregates and save them in one transaction; a race with
        another writer re-applies the conflicting executions one by one. Raises (so nothing
        is committed and the batch is read again) rather than drop anything."""
        if not work:
            return
        with self.service.batch():
            self._process_batch(conn, work, now)

    def _process_batch(self, conn: psycopg.Connection, work: Work, now: float) -> None:
        self._verified = set()
        self._refresh(conn, list(work))
        touched: dict[UUID, Execution] = {}
        for eid, items in work.items():
            self._apply_safely(eid, items, now, touched)
        try:
            self._save(conn, touched, now)
            return
        except IntegrityError:
            for eid in touched:
                self._cache.pop(eid, None)
        log.info("orchestrator: a concurrent write; applying again one execution at a time")
        for eid, items in work.items():
            for _ in range(RACE_RETRIES):
                self._verified = set()
                alone: dict[UUID, Execution] = {}
                self._apply_safely(eid, items, now, alone)
                try:
                    self._save(conn, alone, now)
                    break
                except IntegrityError:
                    for other in alone:
                        self._cache.pop(other, None)
            else:
                raise RuntimeError(f"execution {eid} kept changing under the orchestrator")

    def _refresh(self, conn: psycopg.Connection, eids: list[UUID]) -> None:
        """Drop cached executions another writer moved on (an api cancel, another instance
        before a rebalance, a child's parent written by its child's owner), and read the
        others from the store: two queries in one round trip for the whole batch."""
        cached = [e for e in eids if e in self._cache]
        missing = [e for e in eids if e not in self._cache]
        table = self.store.events_table
        with conn.pipeline(), conn.cursor() as versions, conn.cursor() as events:
            if cached:
                versions.execute(
                    f"SELECT originator_id, max(originator_version) FROM {table} "
                    "WHERE originator_id = ANY(%s) GROUP BY 1",
                    (cached,),
                )
            if missing:
                events.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM {table} "
                    "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version",
                    (missing,),
                )
            latest = versions.fetchall() if cached else []
            stored = events.fetchall() if missing else []
        for eid, version in latest:
            if self._cache[eid].version != version:
                self._cache.pop(eid, None)
        self._verified.update(e for e in cached if e in self._cache)
        mapper = self.store.mapper
        for eid, rows in groupby(stored, key=itemgetter(0)):
            found = project_aggregate(
                None,
                (
                    mapper.to_domain_event(StoredEvent(eid, version, topic, bytes(state)))
                    for _, version, topic, state in rows
                ),
            )
            if not isinstance(found, Execution):
                continue  # a credential's id: nothing an execution report can move
            found.new_children = []
            found.children_to_cancel = []
            self._cache[eid] = found
            self._verified.add(eid)

    def _apply_safely(
        self, eid: UUID, items: list[tuple[str, dict[str, Any]]], now: float, touched: Touched
    ) -> None:
        try:
            self._apply_one(eid, items, now, touched)
        except IntegrityError:
            raise
        except Exception as exc:
            # One execution the orchestrator cannot handle must not stall the others.
            log.exception("orchestrator: execution %s failed internally", eid)
            self._cache.pop(eid, None)
            touched.pop(eid, None)
            execution = self._load(eid, touched)
            if execution is not None:
                execution.new_children = []
                execution.fail_internally(f"{type(exc).__name__}: {exc}")
                touched[eid] = execution

    def _apply_one(
        self, eid: UUID, items: list[tuple[str, dict[str, Any]]], now: float, touched: Touched
    ) -> None:
        execution = self._load(eid, touched)
        if execution is None:
            if any(what == "tick" for what, _ in items):
                self._gone.append(eid)
            return
        for what, message in items:
            if what == "admit":
                execution.admit(now, ACTOR, self.env)
            elif what == "tick":
                if execution.status == "QUEUED":
                    execution.admit(now, ACTOR, self.env)  # marked running, not yet admitted
                elif execution.status == "RUNNING":
                    if not self._lagging:  # heartbeats may wait unread in the topic
                        # Tasks found taken since: heard of when they were found.
                        self._waiting.look(eid, self._heard.setdefault(eid, {}))
                        execution.overdue(
                            now, self.config.heartbeat_timeout_s, self._heard.get(eid, {}),
                            self.config.queue_timeout_s, self._watched_since(eid),
                            self._waiting.since(eid),
                        )  # fmt: skip
                    execution.wake(now, ACTOR, self.env)
                    self._reconcile_children(execution, touched, now)
            elif what == "report":
                self._report(execution, message)
        if execution.status == "RUNNING":
            execution.advance(now, ACTOR, self.env)
        touched[eid] = execution  # saved if it changed; its next look is recorded anyway
        # Children its steps gave up on first: their reason is the nearer one (a step's
        # timeout that also ended the execution, say).
        for cid in execution.children_to_cancel:
            reason = execution.cancel_reasons.pop(cid, "a sibling item failed")
            self._cancel_child(cid, reason, touched)
        execution.children_to_cancel = []
        if execution.finished:
            self._child_ended(execution, touched, now)
            for cid in execution.running_children():
                self._cancel_child(cid, f"parent execution {execution.status.lower()}", touched)

    def _watch(self, consumer: KafkaConsumer) -> None:
        """Note the partitions this instance has now, and since when it has each."""
        assigned = {tp.partition for tp in consumer.assignment()}
        if assigned != self._assigned:
            now = self._clock()
            self._owned_since = {p: self._owned_since.get(p, now) for p in assigned}
            # Heartbeats heard while it had a partition before say nothing now.
            for eid in [e for e in self._heard if self._partition(e) not in assigned]:
                del self._heard[eid]
            for eid in [e for e in self._waiting.known() if self._partition(e) not in assigned]:
                self._waiting.forget(eid)
        self._assigned = assigned

    def _partition(self, eid: UUID) -> int:
        return partition_of(str(eid), self._partitions)

    def _watched_since(self, eid: UUID) -> float:
        """Since when this instance hears the heartbeats of the execution's steps."""
        return self._owned_since.get(self._partition(eid), self._clock())

    def _report(self, execution: Execution, message: dict[str, Any]) -> bool:
        problem = report_problem(message)
        if problem is not None:  # changes nothing: the step's own report or lapse decides
            log.warning("orchestrator: ignoring a malformed runner report (%s): %.300s",
                        problem, message)  # fmt: skip
            return False
        node_id, attempt = message["node_id"], message["attempt"]
        kind = message.get("kind")
        runner = message.get("runner_id")
        started, finished = message.get("started_at"), message.get("finished_at")
        if kind == "handback":
            return execution.record_failure(
                node_id, attempt, "HandedBack", f"runner {runner} shut down during the step",
                ACTOR, retryable=True, charged=False, runner_id=runner,
            )  # fmt: skip
        if message.get("ok"):
            return execution.record_success(
                node_id, attempt, message.get("output"), None, ACTOR,
                runner_id=runner, started_at=started, finished_at=finished,
            )  # fmt: skip
        error = message.get("error") or {}
        details = error.get("details")
        return execution.record_failure(
            node_id, attempt, str(error.get("type") or "Error"),
            str(error.get("message") or "the step failed"), ACTOR,
            retryable=bool(error.get("retryable", True)), runner_id=runner,
            started_at=started, finished_at=finished,
            details=details if isinstance(details, dict) and details else None,
        )  # fmt: skip

    def _child_ended(self, child: Execution, touched: Touched, now: float) -> None:
        """A finished execution: tell its parent (idempotent: a parent ignores a child it
        no longer waits for)."""
        parent_ref = child.parent
        if not parent_ref or not child.finished:
            return
        parent = self._load(_uuid(parent_ref.get("execution_id")), touched)
        if parent is None:
            return
        if parent.child_finished(
            parent_ref["node_id"], int(parent_ref["attempt"]), parent_ref.get("index"),
            str(child.id), child.status, child.output, child.error, now, ACTOR, self.env,
        ):  # fmt: skip
            touched[parent.id] = parent
            for cid in parent.children_to_cancel:
                reason = parent.cancel_reasons.pop(cid, "a sibling item failed")
                self._cancel_child(cid, reason, touched)
            parent.children_to_cancel = []

    def _reconcile_children(self, parent: Execution, touched: Touched, now: float) -> None:
        """Children a parent still waits for that ended without it hearing (a crash between
        two saves, a lost message): the periodic look catches them up from the store."""
        for cid in parent.running_children():
            child = self._load(_uuid(cid), touched)
            if child is not None and child.finished:
                self._child_ended(child, touched, now)

    def _cancel_child(self, cid: str, reason: str, touched: Touched) -> None:
        child = self._load(_uuid(cid), touched)
        if child is not None and not child.finished:
            child.cancel(reason, ACTOR)
            touched[child.id] = child
            for grandchild in child.running_children():
                self._cancel_child(grandchild, reason, touched)

    def _load(self, eid: UUID | None, touched: Touched) -> Execution | None:
        if eid is None:
            return None
        if eid in touched:
            return touched[eid]
        cached = self._cache.get(eid)
        if cached is not None and eid not in self._verified:
            row = self._conn_version(eid)
            if row != cached.version:
                self._cache.pop(eid, None)
                cached = None
            self._verified.add(eid)
        if cached is not None:
            self._cache.move_to_end(eid)
            return cached
        try:
            execution = self.store.get(Execution, eid)
        except NotFound:
            return None
        execution.new_children = []
        execution.children_to_cancel = []
        self._verified.add(eid)
        return execution

    def _conn_version(self, eid: UUID) -> int | None:
        recorder: Any = self.store.recorder
        events = recorder.select_events(eid, desc=True, limit=1)
        return int(events[0].originator_version) if events else None

    def _save(self, conn: psycopg.Connection, touched: Touched, now: float) -> None:
        """Save the touched executions with every child they started (and the children's
        own children, all the way down) in one transaction, then record their next looks."""
        children: list[Execution] = []
        parents = list(touched.values())
        while parents:
            born = []
            for execution in parents:
                for spec in execution.new_children:
                    child = Execution(
                        execution_id=spec.child_id,
                        workflow_id=spec.workflow_id,
                        workflow_version=spec.workflow_version,
                        nodes=spec.nodes,
                        edges=spec.edges,
                        start=spec.start,
                        inputs=spec.inputs,
                        actor_id=ACTOR,
                        workspace_id=execution.workspace_id,
                        vars=execution.vars,
                        trigger=spec.trigger,
                        parent=spec.parent,
                        outer_steps=spec.outer_steps,
                        steps_scope=execution.steps_scope,
                        inline_steps=sorted(execution.inline_steps),
                        loop_rule=spec.loop_rule,
                    )
                    child.new_children = []
                    child.children_to_cancel = []
                    child.admit(now, ACTOR, self.env)
                    born.append(child)
                execution.new_children = []
            children += born
            parents = born
        everything = [*touched.values(), *children]
        changed = [e for e in everything if e.pending_events]
        tasks = [
            message
            for e in changed
            for event in e.pending_events
            if (message := task_message(event)) is not None
        ]
        # The runs rows (children's new ones, everyone's next look) change in the transaction
        # that stores the events which move them.
        also = self._runs_rows(children, now) + self._looks(everything)
        if changed:
            self.store.save(*changed, also=also)
            self.saves += 1
        elif also:
            with conn.transaction():
                for statement, params in also:
                    conn.execute(statement, params)
        for topic, key, task in tasks:  # committed: now they may leave
            self._send(topic, key, task)
        if tasks:
            # Now, not after the bookkeeping below: the producer's I/O thread would wait for
            # this one to let go of the interpreter, and the runner with it.
            self._flush()
        for execution in everything:
            self._cache[execution.id] = execution
            self._cache.move_to_end(execution.id)
        while len(self._cache) > 20_000:
            self._cache.popitem(last=False)
        self._settled(conn, everything)

    # -- the runs table ----------------------------------------------------------------------

    def _insert_runs(
        self,
        conn: psycopg.Connection,
        runs: list[tuple[UUID, dict[str, Any]]],
        now: float,
        state: str = "queued",
    ) -> None:
        rows = [
            (
                eid,
                str(data.get("workflow_id", "")),
                state,
                data.get("max_concurrency"),
                partition_of(str(eid), self._partitions),
                now,
                data.get("log_position"),
            )
            for eid, data in runs
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO autoops_execution_runs "
                "(execution_id, workflow_id, state, max_concurrency, partition, due, position) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (execution_id) DO NOTHING",
                rows,
            )

    def _runs_rows(self, children: list[Execution], now: float) -> list[Statement]:
        """Rows of new children: they run inside their parent's slot, not counted against
        a limit."""
        rows = [
            (
                c.id,
                f"child-of:{c.parent['execution_id']}",
                partition_of(str(c.id), self._partitions),
            )
            for c in children
            if c.parent
        ]
        if not rows:
            return []
        ids, workflows, partitions = (list(column) for column in zip(*rows, strict=True))
        return [
            (
                "INSERT INTO autoops_execution_runs "
                "(execution_id, workflow_id, state, partition, due) "
                "SELECT u.id, u.workflow_id, 'running', u.partition, %s "
                "FROM unnest(%s::uuid[], %s::text[], %s::int[]) AS u(id, workflow_id, partition) "
                "ON CONFLICT (execution_id) DO NOTHING",
                (now, ids, workflows, partitions),
            )
        ]

    def _looks(self, executions: list[Execution]) -> list[Statement]:
        """When each execution needs a look next; finished ones are forgotten."""
        now = self._clock()
        done = [e.id for e in executions if e.finished]
        ids, dues, running = [], [], []
        for e in sorted(executions, key=lambda e: e.id):  # rows locked in one order by all
            if e.finished:
                continue
            wake = e.next_wake(
                self.config.heartbeat_timeout_s,
                self._heard.get(e.id, {}),
                self.config.queue_timeout_s,
                self._watched_since(e.id),
                self._waiting.since(e.id),
            )
            if e.running_children():
                # Children are heard of through their own events; a look now and then
                # catches one whose end was missed.
                wake = min(wake or now + CHILD_CHECK_S, now + CHILD_CHECK_S)
            ids.append(e.id)
            dues.append(min(wake, now + MAX_QUIET_S) if wake is not None else now + MAX_QUIET_S)
            running.append(e.status == "RUNNING")
        statements: list[Statement] = []
        if ids:
            statements.append(
                (
                    "UPDATE autoops_execution_runs r SET due = u.due, state = CASE "
                    "WHEN r.state = 'queued' AND u.running THEN 'running' ELSE r.state END "
                    "FROM unnest(%s::uuid[], %s::float8[], %s::bool[]) AS u(id, due, running) "
                    "WHERE r.execution_id = u.id",
                    (ids, dues, running),
                )
            )
        if done:
            statements.append(
                ("DELETE FROM autoops_execution_runs WHERE execution_id = ANY(%s)", (done,))
            )
        return statements

    def _settled(self, conn: psycopg.Connection, executions: list[Execution]) -> None:
        """After the commit: forget what finished ones were heard of, and hand slots they
        freed to executions queued behind them."""
        for e in executions:
            if e.finished:
                self._heard.pop(e.id, None)
                self._waiting.forget(e.id)
        for workflow_id in {e.workflow_id for e in executions if e.finished and e.max_concurrency}:
            # Freed slots: the next queued ones are marked running, due now.
            self._admit_queued(conn, workflow_id)

    # -- timers and admission ----------------------------------------------------------------

    def fire_timers(self, conn: psycopg.Connection, now: float) -> None:
        """Look at every running execution of our partitions whose time has come, and now
        and then admit what waits in a queue with free slots."""
        mine = sorted(self._assigned)
        if now >= self._next_sweep:
            self._next_sweep = now + QUEUE_SWEEP_S
            queued = conn.execute(
                "SELECT DISTINCT workflow_id FROM autoops_execution_runs "
                "WHERE state = 'queued' AND (partition = ANY(%s) OR partition >= %s)",
                (mine, self._partitions),
            ).fetchall()
            for (workflow_id,) in queued:
                self._admit_queued(conn, workflow_id)
        rows = conn.execute(
            "SELECT execution_id FROM autoops_execution_runs "
            "WHERE state = 'running' AND (partition = ANY(%s) OR partition >= %s) "
            "AND due <= %s ORDER BY due LIMIT %s",
            (mine, self._partitions, now, self.config.batch_size),
        ).fetchall()
        if not rows:
            return
        self._gone = []
        self._process(conn, OrderedDict((row[0], [("tick", {})]) for row in rows), now)
        if self._gone:
            conn.execute(
                "DELETE FROM autoops_execution_runs WHERE execution_id = ANY(%s) "
                "AND created_at < now() - interval '1 minute'",
                (self._gone,),
            )

    def _admit_queued(self, conn: psycopg.Connection, workflow_id: str) -> list[UUID]:
        """Mark as many queued executions of a workflow running as its limit allows (oldest
        first), then admit them. The marks come first: a kill in between leaves rows marked
        running whose executions are admitted on their next look (due now)."""
        now = self._clock()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(workflow_id.encode()),))
            limit_row = conn.execute(
                "SELECT min(max_concurrency) FROM autoops_execution_runs "
                "WHERE workflow_id = %s AND state = 'queued'",
                (workflow_id,),
            ).fetchone()
            limit = limit_row[0] if limit_row else None
            running = conn.execute(
                "SELECT count(*) FROM autoops_execution_runs "
                "WHERE workflow_id = %s AND state = 'running'",
                (workflow_id,),
            ).fetchone()
            free = (
                1_000_000
                if limit is None
                else max(0, int(limit) - int(running[0] if running else 0))
            )
            if free <= 0:
                return []
            admitted = conn.execute(
                "UPDATE autoops_execution_runs SET state = 'running', due = %s "
                "WHERE execution_id IN (SELECT execution_id FROM autoops_execution_runs "
                "WHERE workflow_id = %s AND state = 'queued' "
                "ORDER BY position NULLS FIRST, created_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING execution_id",
                (now, workflow_id, free),
            ).fetchall()
        return [row[0] for row in admitted]


#: The events of the execution topic the orchestrator acts on.
WANTED = (b"execution.ExecutionStarted", b"execution.ExecutionFinished")


class CatchUp:
    """Whether the consumer is still reading what was in its partitions when it got them.

    Until it has, the heartbeats and results of steps that ran while no orchestrator held the
    partitions (a restart, a rebalance) may wait unread, and a lapse declared meanwhile would
    send a step again that had finished and reported (its side effect twice). A first poll
    after a join returns nothing before the first fetch, so an empty poll proves nothing:
    the end offsets at assignment are the mark."""

    def __init__(self) -> None:
        self._assignment: set[TopicPartition] = set()
        self._ends: dict[TopicPartition, int] = {}

    def behind(self, consumer: KafkaConsumer) -> bool:
        assignment = set(consumer.assignment())
        if assignment != self._assignment:
            self._assignment = assignment
            self._ends = dict(consumer.end_offsets(list(assignment))) if assignment else {}
        if self._ends:
            self._ends = {
                tp: end
                for tp, end in self._ends.items()
                if tp in assignment and consumer.position(tp) < end
            }
        return bool(self._ends)


def _type_header(record: Any) -> bytes | None:
    for key, value in record.headers or ():
        if key == "type" and value is not None:
            return bytes(value)
    return None


class Commits:
    """When the orchestrator commits its offsets: at most every `every_s` while records are
    handled, and again after a commit the broker refused (else, in a quiet spell, the next
    owner of the partitions would read them again for nothing)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.pending = False
        self._next = 0.0
        self._failed = False  # set by the client's thread, read by the loop

    def handled(self) -> None:
        self.pending = True

    def due(self, now: float) -> bool:
        if self._failed:
            self._failed = False
            self.pending = True
        return self.pending and now >= self._next

    def sent(self, now: float) -> None:
        self.pending = False
        self._next = now + self.every_s

    def answered(self, offsets: Any, response: Any) -> None:
        """The callback of an asynchronous commit."""
        if isinstance(response, Exception):
            log.info("orchestrator: an offset commit failed (%s); committing again", response)
            self._failed = True


#: When a report's times may be (seconds since the epoch): what PostgreSQL stores as a time.
_EARLIEST, _LATEST = 0.0, 32_503_680_000.0  # 1970 to 3000


def report_problem(message: dict[str, Any]) -> str | None:
    """What is wrong with a runner's result or hand-back, None when nothing: its shape is
    checked before any of it reaches an event (a time that is not one would stop the
    projector at that event; an attempt that is no number would fail the execution)."""
    if message.get("kind") not in ("result", "handback"):
        return f"kind {message.get('kind')!r}"
    if not isinstance(message.get("node_id"), str) or not message["node_id"]:
        return "node_id"
    attempt = message.get("attempt")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        return "attempt"
    if not isinstance(message.get("runner_id"), str | None):
        return "runner_id"
    if message["kind"] == "handback":
        return None
    for name in ("started_at", "finished_at"):
        at = message.get(name)
        if at is not None and (
            not isinstance(at, int | float)
            or isinstance(at, bool)
            or not _EARLIEST <= at <= _LATEST  # NaN fails this too
        ):
            return name
    if not isinstance(message.get("ok"), bool):
        return "ok"
    error = message.get("error")
    if not message["ok"] and not isinstance(error, dict | None):
        return "error"
    if jsontext.too_deep(message.get("output")) or jsontext.too_deep(error):
        return f"output or error nested deeper than {jsontext.MAX_DEPTH} levels"
    try:
        json.dumps(message.get("output"), allow_nan=False)
        if isinstance(error, dict):
            json.dumps(error, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return "output or error is not plain JSON"
    return None


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        message = jsontext.loads(value or b"")
    except ValueError:  # UnicodeDecodeError and nesting too deep included
        return None
    return message if isinstance(message, dict) else None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except (ValueError, TypeError):
        return None


__all__ = ["Orchestrator", "OrchestratorConfig", "TopicPartition", "partition_of"]
