"""The command bus: one writer thread that group-commits commands to the event store.

The store serialises appends with a table lock, so throughput comes from putting many commands'
events into one transaction. Callers submit and wait on a future; the writer drains the queue,
applies each command to an in-memory aggregate, saves every touched aggregate in one `save()`,
then answers.

Aggregates stay cached between batches, yet every answer holds for the workflow as it is in
the store, even when other processes write to it too. A save proves the copies it wrote were
current (a stale one fails with IntegrityError: those commands are retried one by one on
fresh state). A command answered without a write (refused, or a repeat) on a cached copy the
batch did not save is checked against the store's head version (one query for the batch) and
decided again on fresh state when the copy was behind. A command naming an `expected_version`
is rebased onto newer versions when what it depends on did not change, otherwise refused with
CONFLICT; one naming none is based on whatever is current.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from command_side.errors import CommandError, Conflict, NotFound
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow import handlers, rebase
from command_side.workflow.aggregate import Workflow
from command_side.workflow.op_keys import same_operation

log = logging.getLogger(__name__)

Command = c.CreateWorkflow | c.WorkflowCommand
RACE_RETRIES = 8


@dataclass(eq=False)
class _Pending:
    command: Command
    meta: c.Meta
    future: Future[c.CommandResult] = field(default_factory=Future)


class CommandBus:
    """Accepts commands from any thread; a single writer thread group-commits them."""

    def __init__(self, store: WorkflowStore, *, batch_size: int = 256, cache_size: int = 5000):
        self._store = store
        self._batch_size = batch_size
        self._cache: OrderedDict[UUID, Workflow] = OrderedDict()
        self._cache_size = cache_size
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="command-writer", daemon=True)
        self._started = False
        self.batches = 0

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Finish every queued command, then stop the writer."""
        if self._started:
            self._queue.put(None)
            self._thread.join()
            self._started = False

    def submit(self, command: Command, meta: c.Meta) -> Future[c.CommandResult]:
        item = _Pending(command, meta)
        if not self._started:
            item.future.set_exception(RuntimeError("the command bus is not running"))
            return item.future
        self._queue.put(item)
        return item.future

    def execute(
        self, command: Command, meta: c.Meta, timeout: float | None = 30
    ) -> c.CommandResult:
        return self.submit(command, meta).result(timeout)

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Pending] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if batch:
                try:
                    self._commit_batch(batch)
                except BaseException as exc:  # never leave a caller waiting forever
                    log.exception("command batch failed")
                    self._cache.clear()
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        self.batches += 1
        cached = {i for i in map(_workflow_id, batch) if i is not None and i in self._cache}
        touched: dict[UUID, Workflow] = {}
        decided: list[tuple[_Pending, c.CommandResult | CommandError]] = []
        for item in batch:
            try:
                decided.append((item, self._apply(item, touched)))
            except CommandError as exc:
                decided.append((item, exc))
        dirty = [w for w in touched.values() if w.pending_events]
        try:
            self._save(dirty)
        except IntegrityError:
            for workflow in touched.values():
                self._cache.pop(workflow.id, None)
            # Every command is decided again, refusals too: a copy was stale, maybe theirs.
            # Versions written by this batch's own retries are not "someone else's" change:
            # a command must not conflict with the one before it in the same batch.
            ours: set[tuple[UUID, int]] = set()
            for item, _ in decided:
                self._retry_alone(item, ours)
            return
        for workflow in touched.values():
            self._remember(workflow)
        # A cached copy this batch only read was not proven current by the save: those
        # answers wait for a look at the store's head; the others (committed, or decided on
        # copies the save proved current or just loaded) go now, whatever that look meets.
        read_only = cached - {w.id for w in dirty}
        unproven = [(i, o) for i, o in decided if _workflow_id(i) in read_only]
        for item, outcome in decided:
            if _workflow_id(item) not in read_only:
                _answer(item, outcome)
        if not unproven:
            return
        behind = self._behind(read_only)
        retried: set[tuple[UUID, int]] = set()  # shared: they must not conflict together
        for item, outcome in unproven:
            if _workflow_id(item) in behind:
                self._retry_alone(item, retried)
            else:
                _answer(item, outcome)

    def _save(self, dirty: list[Workflow]) -> None:
        """One append transaction; then snapshots of workflows that crossed an interval."""
        if not dirty:
            return
        every = self._store.snapshot_every
        before = {w.id: (w.version - len(w.pending_events)) // every for w in dirty}
        self._store.save(*dirty)
        for workflow in dirty:
            if workflow.version // every != before[workflow.id]:
                try:
                    self._store.snapshot(workflow)
                except Exception:  # the events are committed: only loading gets slower
                    log.warning("snapshot of %s v%d failed", workflow.id, workflow.version,
                                exc_info=True)  # fmt: skip

    def _retry_alone(self, item: _Pending, ours: set[tuple[UUID, int]]) -> None:
        for _ in range(RACE_RETRIES):
            touched: dict[UUID, Workflow] = {}
            try:
                result = self._apply(item, touched, fresh=True, ours=ours)
                self._save([w for w in touched.values() if w.pending_events])
            except IntegrityError:
                for workflow in touched.values():  # unsaved events must not stay cached
                    self._cache.pop(workflow.id, None)
                continue
            except CommandError as exc:
                item.future.set_exception(exc)
                return
            for workflow in touched.values():
                self._remember(workflow)
            ours.add((result.workflow_id, result.version))
            item.future.set_result(result)
            return
        item.future.set_exception(
            Conflict(
                "the workflow changes too fast to apply this command; retry", current_version=0
            )
        )

    # -- applying one command ---------------------------------------------------------------

    def _apply(
        self,
        item: _Pending,
        touched: dict[UUID, Workflow],
        *,
        fresh: bool = False,
        ours: set[tuple[UUID, int]] | None = None,
    ) -> c.CommandResult:
        command, meta = item.command, item.meta
        if isinstance(command, c.CreateWorkflow):
            workflow_id = handlers.workflow_id_for(meta)
            existing = touched.get(workflow_id) or self._load(workflow_id, fresh, missing_ok=True)
            if existing is not None:
                prior = existing.result_of(meta.client_op_id)
                if prior is None or existing.workspace_id != meta.workspace_id:
                    raise _reused(existing)
                prior = self._repeated(item, existing, prior)
                return c.CommandResult(existing.id, prior.version, str(existing.id))
            new = handlers.create_workflow(command, meta, workflow_id)
            touched[workflow_id] = new
            return c.CommandResult(workflow_id, new.version, str(workflow_id))

        workflow = touched.get(command.workflow_id) or self._load(command.workflow_id, fresh)
        if workflow is None or workflow.workspace_id != meta.workspace_id:
            raise NotFound(f"workflow {command.workflow_id} does not exist")
        touched[workflow.id] = workflow
        prior = workflow.result_of(meta.client_op_id)
        if prior is not None:  # before any check: the workflow may have changed since
            return self._repeated(item, workflow, prior)
        # A command naming no version is based on whatever is current: nothing to rebase.
        base = command.expected_version or workflow.version
        if base > workflow.version:
            raise Conflict(
                f"expected version {base} but the workflow is at {workflow.version}",
                current_version=workflow.version,
            )
        if base < workflow.version:
            since = self._events_since(workflow, base)
            others = [
                e for e in since if (e.originator_id, e.originator_version) not in (ours or ())
            ]
            met = rebase.overlap(command, others)
            if met:
                raise Conflict(
                    f"the workflow changed since version {base}: {', '.join(sorted(met))}",
                    current_version=workflow.version,
                )
        return handlers.apply(workflow, command, meta)

    def _repeated(
        self, item: _Pending, workflow: Workflow, prior: c.CommandResult
    ) -> c.CommandResult:
        """The first result of a repeated operation; CONFLICT when its clientOpId recorded
        another command, or another actor's."""
        pending = [e for e in workflow.pending_events if e.originator_version == prior.version]
        recorded = pending or self._store.repository.event_store.get(
            workflow.id, gt=prior.version - 1, lte=prior.version
        )
        event = next(iter(recorded), None)
        if event is None or not same_operation(item.command, item.meta, event, workflow):
            raise _reused(workflow)
        return prior

    def _behind(self, workflow_ids: set[UUID]) -> set[UUID]:
        """The cached workflows another process has written since; dropped from the cache."""
        heads = self._heads(sorted(workflow_ids))
        behind = set()
        for workflow_id in workflow_ids:
            cached = self._cache.get(workflow_id)
            if cached is None or heads.get(workflow_id) != cached.version:
                self._cache.pop(workflow_id, None)
                behind.add(workflow_id)
        return behind

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _heads(self, workflow_ids: list[UUID]) -> dict[UUID, int]:
        """The stored version of each workflow: an index look-up each, in one round trip."""
        recorder: Any = self._store.recorder
        statement = SQL(
            "SELECT w.id, (SELECT max(originator_version) FROM {}.{} WHERE originator_id = w.id)"
            " AS version FROM unnest(%s::uuid[]) AS w(id)"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(statement, (workflow_ids,), prepare=True)  # autocommit: one trip
            return {row["id"]: row["version"] for row in cursor.fetchall()}

    def _events_since(self, workflow: Workflow, base: int) -> list[Any]:
        saved_version = workflow.version - len(workflow.pending_events)
        stored = self._store.events_after(workflow.id, base) if base < saved_version else []
        return stored + [e for e in workflow.pending_events if e.originator_version > base]

    def _load(self, workflow_id: UUID, fresh: bool, missing_ok: bool = False) -> Workflow | None:
        cached = None if fresh else self._cache.get(workflow_id)
        if cached is not None:
            self._cache.move_to_end(workflow_id)
            return cached
        try:
            workflow = self._store.load(workflow_id)
        except NotFound:
            if missing_ok:
                return None
            raise
        self._remember(workflow)
        return workflow

    def _remember(self, workflow: Workflow) -> None:
        self._cache[workflow.id] = workflow
        self._cache.move_to_end(workflow.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _workflow_id(item: _Pending) -> UUID | None:
    if isinstance(item.command, c.CreateWorkflow):
        return handlers.workflow_id_for(item.meta) if item.meta.client_op_id else None
    return item.command.workflow_id


def _answer(item: _Pending, outcome: c.CommandResult | CommandError) -> None:
    if isinstance(outcome, CommandError):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)


def _reused(workflow: Workflow) -> Conflict:
    return Conflict(
        "this clientOpId was used for another operation", current_version=workflow.version
    )
