"""Group-committed starts: many `startExecution` calls, one append transaction.

The api answers many starts at once; each alone would pay a PostgreSQL transaction. A single
writer thread takes whatever starts are waiting, checks each (a refused one answers its own
caller only), saves the rest together, and answers. A duplicate id (a webhook delivery
retried with its idempotency key) makes the batch fail as a whole: then each is saved alone,
so only the duplicate gets its CONFLICT.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from command_side.errors import CommandError
from command_side.execution.aggregate import Execution
from command_side.execution.service import ExecutionService

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Start:
    kwargs: dict[str, Any]
    future: Future[UUID] = field(default_factory=Future)


class ExecutionStarter:
    def __init__(self, service: ExecutionService, batch_size: int = 256) -> None:
        self._service = service
        self._batch_size = batch_size
        self._queue: queue.SimpleQueue[_Start | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="execution-starter", daemon=True)
        self._thread.start()
        self.batches = 0

    def submit(self, **kwargs: Any) -> Future[UUID]:
        """`ExecutionService.start`'s arguments, by name; the future gives the id."""
        item = _Start(kwargs)
        self._queue.put(item)
        return item.future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("execution starts failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            if stopping:
                return

    def _commit(self, batch: list[_Start]) -> None:
        self.batches += 1
        ready: list[tuple[_Start, Execution]] = []
        with self._service.batch():
            for item in batch:
                try:
                    ready.append((item, self._service.prepare(**item.kwargs)))
                except CommandError as exc:
                    item.future.set_exception(exc)
        if not ready:
            return
        try:
            self._service.executions.save(*(execution for _, execution in ready))
        except Exception:
            for item, _ in ready:  # fresh aggregates: the failed save left them pending
                try:
                    execution = self._service.prepare(**item.kwargs)
                    self._service._save_new(execution)
                    item.future.set_result(execution.id)
                except CommandError as exc:
                    item.future.set_exception(exc)
            return
        for item, execution in ready:
            item.future.set_result(execution.id)
