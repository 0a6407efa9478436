"""The command bus: one writer thread that group-commits commands to the event store.

The store serialises appends with a table lock, so throughput comes from putting many commands'
events into one transaction. Callers submit and wait on a future; the writer drains the queue,
applies each command to an in-memory aggregate (cached between batches), saves every touched
aggregate in one `save()`, then answers. A stale cached aggregate (another process wrote)
surfaces as IntegrityError: those commands are retried one by one on fresh state, rebased
when what they depend on did not change, otherwise refused with CONFLICT.
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

from eventsourcing.persistence import IntegrityError

from command_side.errors import CommandError, Conflict, NotFound
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow import handlers, rebase
from command_side.workflow.aggregate import Workflow

log = logging.getLogger(__name__)

Command = c.CreateWorkflow | c.WorkflowCommand
RACE_RETRIES = 8


@dataclass(eq=False)
class _Pending:
    command: Command
    meta: c.Meta
    future: Future[c.CommandResult] = field(default_factory=Future)
    #: The version the command was first applied to: the base for rebasing after a race.
    base_version: int | None = None


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
        touched: dict[UUID, Workflow] = {}
        applied: list[tuple[_Pending, c.CommandResult]] = []
        for item in batch:
            try:
                applied.append((item, self._apply(item, touched)))
            except CommandError as exc:
                item.future.set_exception(exc)
        dirty = [w for w in touched.values() if w.pending_events]
        try:
            self._save(dirty)
        except IntegrityError:
            for workflow in touched.values():
                self._cache.pop(workflow.id, None)
            # Versions written by this batch's own retries are not "someone else's" change:
            # a command must not conflict with the one before it in the same batch.
            ours: set[tuple[UUID, int]] = set()
            for item, _ in applied:
                self._retry_alone(item, ours)
            return
        for workflow in touched.values():
            self._remember(workflow)
        for item, result in applied:
            item.future.set_result(result)

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
                if prior is not None and existing.workspace_id == meta.workspace_id:
                    return c.CommandResult(existing.id, prior.version, str(existing.id))
                raise Conflict(
                    "this operation id was used already", current_version=existing.version
                )
            new = handlers.create_workflow(command, meta, workflow_id)
            touched[workflow_id] = new
            return c.CommandResult(workflow_id, new.version, str(workflow_id))

        workflow = touched.get(command.workflow_id) or self._load(command.workflow_id, fresh)
        if workflow is None or workflow.workspace_id != meta.workspace_id:
            raise NotFound(f"workflow {command.workflow_id} does not exist")
        touched[workflow.id] = workflow
        prior = workflow.result_of(meta.client_op_id)
        if prior is not None:
            return prior
        if item.base_version is None:
            item.base_version = command.expected_version or workflow.version
        base = item.base_version
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
