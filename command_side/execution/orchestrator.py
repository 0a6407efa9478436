"""The orchestrator: the process manager that moves executions forward.

It consumes `autoops.execution.events` (new executions, finished children, cancels) and
`autoops.runner.results` (step results, heartbeats) in one consumer group, so executions are
partitioned by id across instances. Per poll it applies everything to the Execution
aggregates (cached), decides, and saves every touched aggregate in one transaction; tasks
leave only afterwards, through the relay, from the committed events. Offsets are committed
after the save, so a kill at any instant re-reads at most one batch, and re-applying it is a
no-op (reports of superseded or finished attempts are ignored).

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
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from command_side.errors import NotFound
from command_side.execution.aggregate import Execution, Pinned, StepProblem
from command_side.execution.service import ExecutionService
from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore
from infra import kafka

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
DDL_LOCK = zlib.crc32(b"autoops.execution-runs-ddl")
ACTOR = "orchestrator"
EVENTS_TOPIC = kafka.events_topic("execution")
RESULTS_TOPIC = "autoops.runner.results"
RACE_RETRIES = 5


@dataclass(frozen=True, kw_only=True)
class OrchestratorConfig:
    database_url: str
    eventsourcing_env: dict[str, str]
    bootstrap: str
    partitions: int
    artifact_root: str
    heartbeat_interval_s: float = 2.0
    heartbeat_timeout_s: float = 30.0
    step_timeout_s: float = 3600.0
    batch_size: int = 500
    fetch_max_wait_ms: int = 5
    group_timeout_ms: int = 6000
    timer_poll_s: float = 0.05


def partition_of(execution_id: str, partitions: int) -> int:
    """The Kafka partition of a key, as kafka-python's default partitioner picks it."""
    return int(murmur2(execution_id.encode()) & 0x7FFFFFFF) % partitions


class StoreSurroundings:
    """What decisions need from the world: credentials, other workflows, artifact contents."""

    def __init__(self, service: ExecutionService, config: OrchestratorConfig) -> None:
        from infra.artifacts import ArtifactStore

        self._service = service
        self._artifacts = ArtifactStore(Path(config.artifact_root))
        self.heartbeat_s = config.heartbeat_interval_s
        self.step_timeout_s = config.step_timeout_s

    def resolve(self, workspace_id: str, value: Any) -> Any:
        if isinstance(value, dict) and "$artifact" in value:
            try:
                return self._artifacts.resolve(workspace_id, value)
            except (OSError, ValueError) as exc:
                raise StepProblem("ArtifactMissing", f"a recorded output is gone: {exc}") from exc
        return value

    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        return self._service.credentials(workspace_id, names)

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        try:
            pinned = self._service.pinned(workspace_id, workflow_id, version)
        except (NotFound, ValueError) as exc:
            raise StepProblem("WorkflowNotFound", str(exc)) from None
        except Exception as exc:  # ValidationFailed: not published
            raise StepProblem("WorkflowNotFound", str(exc)) from None
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
        self._booted = clock()
        self._assigned: set[int] = set()
        self.ready = threading.Event()
        self.saves = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        cfg = self.config
        with psycopg.connect(cfg.database_url, autocommit=True) as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                conn.execute(RUNS_DDL)
            while not stop.is_set():
                try:
                    self._consume(conn, stop)
                except (KafkaError, OSError) as exc:
                    log.warning("orchestrator: broker unavailable (%s); retrying", exc)
                    self._heartbeat(kafka=f"unavailable: {exc}")
                    stop.wait(1.0)
        self.store.close()
        self.workflows.close()

    def _consume(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        cfg = self.config
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
            max_poll_interval_ms=max(cfg.group_timeout_ms, 60_000),
            max_poll_records=cfg.batch_size,
        )
        consumer.subscribe([EVENTS_TOPIC, RESULTS_TOPIC])
        try:
            next_timers = 0.0
            while not stop.is_set():
                polled = consumer.poll(timeout_ms=int(cfg.timer_poll_s * 1000))
                self._assigned = {tp.partition for tp in consumer.assignment()}
                if self._assigned:
                    self.ready.set()
                records = [r for batch in polled.values() for r in batch]
                if records:
                    self.handle(conn, records)
                    consumer.commit()
                now = self._clock()
                if now >= next_timers and self._assigned:
                    self.fire_timers(conn, now)
                    next_timers = now + cfg.timer_poll_s
                self._heartbeat(kafka="up")
        finally:
            try:
                consumer.close()
            except KafkaError as exc:
                log.debug("orchestrator: closing the consumer failed: %s", exc)

    # -- one batch ---------------------------------------------------------------------------

    def handle(self, conn: psycopg.Connection, records: Iterable[Any]) -> None:
        """Apply a batch of Kafka records (events and runner reports) and save once."""
        now = self._clock()
        work: OrderedDict[UUID, list[tuple[str, dict[str, Any]]]] = OrderedDict()
        new_runs: list[tuple[UUID, dict[str, Any]]] = []
        for record in records:
            message = _decode(record.value)
            if message is None:
                log.warning("orchestrator: skipping an undecodable message at %s", record.offset)
                continue
            if record.topic == EVENTS_TOPIC:
                kind = str(message.get("type", "")).removeprefix("execution.")
                data = message.get("data") or {}
                if kind == "ExecutionStarted":
                    eid = _uuid(message.get("aggregate_id"))
                    if eid is not None:
                        new_runs.append((eid, data))
                elif kind == "ExecutionFinished":
                    eid = _uuid(message.get("aggregate_id"))
                    if eid is not None:
                        work.setdefault(eid, []).append(("finished", data))
                continue
            eid = _uuid(message.get("execution_id"))
            if eid is None:
                log.warning("orchestrator: a runner report without execution id: %.200s", message)
                continue
            if message.get("kind") == "heartbeat":
                key = f"{message.get('node_id')}:{message.get('attempt')}"
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
                work.setdefault(eid, []).insert(0, ("admit", {}))
        self._apply(conn, work, now)

    def _apply(
        self,
        conn: psycopg.Connection,
        work: OrderedDict[UUID, list[tuple[str, dict[str, Any]]]],
        now: float,
    ) -> None:
        pending = list(work.items())
        for _ in range(RACE_RETRIES):
            touched: dict[UUID, Execution] = {}
            for eid, items in pending:
                self._apply_one(eid, items, now, touched)
            if not touched:
                return
            try:
                self._save(conn, touched, now)
                return
            except IntegrityError:
                # Another writer (an api cancel, another instance during a rebalance): drop
                # the cached state and apply the same reports to fresh aggregates.
                for eid in touched:
                    self._cache.pop(eid, None)
                log.info("orchestrator: a concurrent write; applying again on fresh state")
        log.warning("orchestrator: gave up a batch after %d races", RACE_RETRIES)

    def _apply_one(
        self,
        eid: UUID,
        items: list[tuple[str, dict[str, Any]]],
        now: float,
        touched: dict[UUID, Execution],
    ) -> None:
        execution = self._load(eid, touched)
        if execution is None:
            return
        changed = False
        for what, message in items:
            if what == "admit":
                changed |= execution.admit(now, ACTOR, self.env)
            elif what == "finished":
                self._child_ended(execution, touched, now)
                self._cancel_children(execution, touched)
            else:
                changed |= self._report(execution, message)
        if changed and execution.status == "RUNNING":
            execution.advance(now, ACTOR, self.env)
        if changed or execution.new_children:
            touched[eid] = execution

    def _report(self, execution: Execution, message: dict[str, Any]) -> bool:
        node_id = str(message.get("node_id", ""))
        try:
            attempt = int(message.get("attempt", 0))
        except (TypeError, ValueError):
            return False
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
        return execution.record_failure(
            node_id, attempt, str(error.get("type") or "Error"),
            str(error.get("message") or "the step failed"), ACTOR,
            retryable=bool(error.get("retryable", True)), runner_id=runner,
            started_at=started, finished_at=finished,
        )  # fmt: skip

    def _child_ended(self, child: Execution, touched: dict[UUID, Execution], now: float) -> bool:
        """A finished execution: tell its parent. Returns whether `child` itself changed."""
        parent_ref = child.parent
        if not parent_ref or not child.finished:
            return False
        parent_id = _uuid(parent_ref.get("execution_id"))
        parent = self._load(parent_id, touched) if parent_id else None
        if parent is None:
            return False
        if parent.child_finished(
            parent_ref["node_id"], int(parent_ref["attempt"]), parent_ref.get("index"),
            str(child.id), child.status, child.output, child.error, now, ACTOR, self.env,
        ):  # fmt: skip
            touched[parent.id] = parent
        return False

    def _cancel_children(self, execution: Execution, touched: dict[UUID, Execution]) -> None:
        """A finished parent leaves no child running."""
        if not execution.finished:
            return
        for cid in execution.running_children():
            child = self._load(_uuid(cid), touched)
            if child is not None and not child.finished:
                child.cancel(f"parent execution {execution.status.lower()}", ACTOR)
                touched[child.id] = child

    def _load(self, eid: UUID | None, touched: dict[UUID, Execution]) -> Execution | None:
        if eid is None:
            return None
        if eid in touched:
            return touched[eid]
        cached = self._cache.get(eid)
        if cached is not None:
            self._cache.move_to_end(eid)
            return cached
        try:
            execution = self.store.get(Execution, eid)
        except NotFound:
            return None
        execution.new_children = []
        return execution

    def _save(self, conn: psycopg.Connection, touched: dict[UUID, Execution], now: float) -> None:
        aggregates: list[Any] = list(touched.values())
        children: list[Execution] = []
        for execution in touched.values():
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
                )
                child.admit(now, ACTOR, self.env)
                children.append(child)
        aggregates += children
        self.store.save(*aggregates)
        self.saves += 1
        for execution in touched.values():
            execution.new_children = []
        for child in children:
            child.new_children = []
        everything = [*touched.values(), *children]
        for execution in everything:
            self._cache[execution.id] = execution
            self._cache.move_to_end(execution.id)
        while len(self._cache) > 20_000:
            self._cache.popitem(last=False)
        if children:
            self._insert_runs(
                conn,
                [(c.id, {"workflow_id": c.workflow_id, "max_concurrency": None}) for c in children],
                now,
                state="running",
            )
        self._settle(conn, everything)

    # -- the runs table ----------------------------------------------------------------------

    def _insert_runs(
        self,
        conn: psycopg.Connection,
        runs: list[tuple[UUID, dict[str, Any]]],
        now: float,
        state: str = "queued",
    ) -> None:
        parts = self.config.partitions
        rows = [
            (
                eid,
                str(data.get("workflow_id", "")),
                state,
                data.get("max_concurrency"),
                partition_of(str(eid), parts),
                now,
            )
            for eid, data in runs
        ]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO autoops_execution_runs "
                "(execution_id, workflow_id, state, max_concurrency, partition, due) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (execution_id) DO NOTHING",
                rows,
            )

    def _settle(self, conn: psycopg.Connection, executions: list[Execution]) -> None:
        """Record when each execution needs a look next; forget finished ones."""
        done = [e.id for e in executions if e.finished]
        ids, dues = [], []
        for e in executions:
            if e.finished:
                continue
            wake = e.next_wake(self.config.heartbeat_timeout_s, self._heard_of(e))
            ids.append(e.id)
            dues.append(wake if wake is not None else self._clock() + 3600.0)
        with conn.pipeline():
            if ids:
                conn.execute(
                    "UPDATE autoops_execution_runs r SET due = u.due, state = CASE "
                    "WHEN r.state = 'queued' AND u.running THEN 'running' ELSE r.state END "
                    "FROM unnest(%s::uuid[], %s::float8[], %s::bool[]) AS u(id, due, running) "
                    "WHERE r.execution_id = u.id",
                    (
                        ids,
                        dues,
                        [e.status == "RUNNING" for e in executions if not e.finished],
                    ),
                )
            if done:
                conn.execute(
                    "DELETE FROM autoops_execution_runs WHERE execution_id = ANY(%s)", (done,)
                )
        for eid in done:
            self._heard.pop(eid, None)
        if done:
            workflows = {e.workflow_id for e in executions if e.finished and e.max_concurrency}
            for workflow_id in workflows:
                # Freed slots: the next queued ones are due now (admitted on their look).
                self._admit_queued(conn, workflow_id)

    def _heard_of(self, execution: Execution) -> dict[str, float]:
        """Heartbeats heard, and this process's start for steps dispatched before it: a
        restarted orchestrator gives running steps a full heartbeat timeout again."""
        heard = self._heard.get(execution.id, {})
        out = dict(heard)
        for node_id, step in execution.steps.items():
            if step.status == "scheduled" and step.task is not None:
                key = f"{node_id}:{step.attempt}"
                out[key] = max(out.get(key, 0.0), self._booted)
        return out

    # -- timers and admission ----------------------------------------------------------------

    def fire_timers(self, conn: psycopg.Connection, now: float) -> None:
        """Look at every execution of our partitions whose time has come."""
        rows = conn.execute(
            "SELECT execution_id, state, workflow_id FROM autoops_execution_runs "
            "WHERE partition = ANY(%s) AND due <= %s ORDER BY due LIMIT %s",
            (sorted(self._assigned), now, self.config.batch_size),
        ).fetchall()
        if not rows:
            return
        running = [eid for eid, state, _ in rows if state == "running"]
        for workflow_id in {wf for _, state, wf in rows if state == "queued"}:
            running += self._admit_queued(conn, workflow_id)
        for _ in range(RACE_RETRIES):
            touched: dict[UUID, Execution] = {}
            gone: list[UUID] = []
            for eid in running:
                execution = self._load(eid, touched)
                if execution is None:
                    gone.append(eid)
                    continue
                if execution.status == "QUEUED":
                    execution.admit(now, ACTOR, self.env)
                elif execution.status == "RUNNING":
                    execution.overdue(
                        now, self.config.heartbeat_timeout_s, self._heard_of(execution)
                    )
                    execution.wake(now, ACTOR, self.env)
                touched[eid] = execution
            if gone:
                conn.execute(
                    "DELETE FROM autoops_execution_runs WHERE execution_id = ANY(%s) "
                    "AND created_at < now() - interval '1 minute'",
                    (gone,),
                )
            try:
                self._save(conn, touched, now)
                return
            except IntegrityError:
                for eid in touched:
                    self._cache.pop(eid, None)

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
                "WHERE workflow_id = %s AND state = 'queued' ORDER BY created_at LIMIT %s "
                "FOR UPDATE SKIP LOCKED) RETURNING execution_id",
                (now, workflow_id, free),
            ).fetchall()
        return [row[0] for row in admitted]


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        message = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except (ValueError, TypeError):
        return None


__all__ = ["Orchestrator", "OrchestratorConfig", "TopicPartition", "partition_of"]
