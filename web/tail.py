"""Live workflow events for subscriptions, read straight from the event store.

The store NOTIFYs every append; one LISTEN connection per api process wakes a tail that reads
the notification log once and hands each watched workflow its new events. So an edit reaches
its subscribers one commit after it happened, without waiting for Kafka and the projector,
and N watchers of M workflows cost one read per append, not N or M. Catch-up (events after a
version) reads the same store, so the two can never disagree or leave a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import psycopg

from command_side.contracts.envelope import to_envelope
from command_side.store import WorkflowStore

log = logging.getLogger(__name__)

Row = dict[str, Any]
#: Most notifications read per round; a burst is read in rounds of this size.
READ_LIMIT = 500


def row_of(event: Any, position: int = 0) -> Row:
    """A stored event in the shape subscriptions send (the history read model's shape)."""
    envelope = to_envelope("workflow", event, position)
    return {
        "version": envelope["aggregate_version"],
        "type": envelope["type"].split(".", 1)[1],
        "actor_id": envelope["actor_id"],
        "workspace_id": envelope["workspace_id"],
        "occurred_at": event.timestamp,
        "payload": envelope["data"],
    }


#: Batches a subscriber may fall behind by before it is told to read from the store instead.
WATCH_BACKLOG = 64


class Watch:
    """One subscriber's inbox. A subscriber that stops reading (a stalled websocket) does not
    grow it without bound: past the backlog, deliveries stop and `behind` tells the
    subscriber to catch up from the store, which has everything."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Row]] = asyncio.Queue(maxsize=WATCH_BACKLOG)
        self.behind = False

    def deliver(self, rows: list[Row]) -> None:
        try:
            self.queue.put_nowait(rows)
        except asyncio.QueueFull:
            self.behind = True

    async def next(self, timeout: float) -> list[Row] | None:
        """New rows; None when it fell behind (read the store) or nothing came in time."""
        if self.behind:
            self.behind = False
            while not self.queue.empty():
                self.queue.get_nowait()
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return []


class EventTail:
    def __init__(self, store: WorkflowStore, database_url: str, poll_interval_s: float = 1.0):
        self._store = store
        self._database_url = database_url
        self._poll_interval_s = poll_interval_s
        self._watchers: dict[UUID, set[Watch]] = {}
        self._position = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        newest: int | None = await asyncio.to_thread(self._store.recorder.max_notification_id)
        self._position = newest or 0
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, workflow_id: UUID) -> AsyncIterator[Watch]:
        """The workflow's new events, in version order, for one subscriber."""
        watch = Watch()
        self._watchers.setdefault(workflow_id, set()).add(watch)
        try:
            yield watch
        finally:
            watchers = self._watchers.get(workflow_id, set())
            watchers.discard(watch)
            if not watchers:
                self._watchers.pop(workflow_id, None)

    async def events_after(self, workflow_id: UUID, version: int) -> list[Row]:
        """Stored events of the workflow above `version`, oldest first (at most a page)."""

        def read() -> list[Row]:
            events = self._store.repository.event_store.get(
                workflow_id, gt=version, limit=READ_LIMIT
            )
            return [row_of(e) for e in events]

        return await asyncio.to_thread(read)

    async def workspace_of(self, workflow_id: UUID) -> str | None:
        """The workspace a workflow belongs to, None when it does not exist."""

        def read() -> str | None:
            first = list(self._store.repository.event_store.get(workflow_id, limit=1))
            return str(vars(first[0])["workspace_id"]) if first else None

        return await asyncio.to_thread(read)

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True
                ) as conn:
                    await conn.execute(f'LISTEN "{self._store.events_table}"')
                    while True:
                        await self._read()
                        # Woken by an append, or polling when a NOTIFY was missed.
                        async for _ in conn.notifies(timeout=self._poll_interval_s, stop_after=1):
                            pass
            except (psycopg.Error, OSError) as exc:
                log.warning("event tail: %s; reconnecting", exc)
                await asyncio.sleep(self._poll_interval_s)
            except Exception:  # a bug must not silence every subscription of the process
                log.exception("event tail failed; restarting it")
                await asyncio.sleep(self._poll_interval_s)

    async def _read(self) -> None:
        while True:
            batch = await asyncio.to_thread(self._select, self._position)
            if batch is None:
                return
            self._position, rows = batch
            for workflow_id, new in rows.items():
                for watch in self._watchers.get(workflow_id, ()):
                    watch.deliver(new)

    def _select(self, after: int) -> tuple[int, dict[UUID, list[Row]]] | None:
        """The next round of notifications: its last position and the decoded events of the
        watched workflows (others are not decoded). None when there is nothing new.

        Who watches is asked after the read, not before: a subscriber that registered
        meanwhile gets these events here, or (registered later still) reads them itself."""
        notifications = self._store.recorder.select_notifications(
            start=after, limit=READ_LIMIT, inclusive_of_start=False
        )
        if not notifications:
            return None
        rows: dict[UUID, list[Row]] = {}
        for n in notifications:
            workflow_id = UUID(str(n.originator_id))
            if workflow_id not in self._watchers:
                continue
            try:
                event = self._store.mapper.to_domain_event(n)
            except Exception:  # one bad event must not stall every subscription
                log.exception("event tail: cannot decode notification %s; skipped", n.id)
                continue
            rows.setdefault(workflow_id, []).append(row_of(event, n.id))
        return notifications[-1].id, rows
