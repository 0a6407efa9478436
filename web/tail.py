"""Live events for subscriptions, read straight from an event store (one tail per context:
workflows, executions).

The store NOTIFYs every append; one LISTEN connection per store and api process wakes a tail
that reads the notification log once and hands each watched aggregate its new events. So an
edit reaches its subscribers one commit after it happened, without waiting for Kafka and the
projector, and N watchers of M aggregates cost one read per append, not N or M. Catch-up
(events after a version) reads the same store, so the two can never disagree or leave a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic

from command_side.contracts.envelope import to_envelope
from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore
from command_side.workflow.aggregate import Workflow

log = logging.getLogger(__name__)

Row = dict[str, Any]
#: Most notifications read per round; a burst is read in rounds of this size.
READ_LIMIT = 500


def row_of(event: Any, position: int = 0, context: str = "workflow") -> Row:
    """A stored event in the shape subscriptions send (the history read model's shape):
    its public data only, as in the envelope."""
    envelope = to_envelope(context, event, position)
    return {
        "version": envelope["aggregate_version"],
        "type": envelope["type"].split(".", 1)[1],
        "actor_id": envelope["actor_id"],
        "workspace_id": envelope["workspace_id"],
        "occurred_at": event.timestamp,
        "payload": envelope["data"],
    }


#: Store lookups at once per tail that any caller may start (see `EventTail.origin`).
LOOKUPS = 4
#: How long, and how many per workspace, publishes the workflow tail remembers: webhooks look
#: here for a version the read model has not folded yet (the projector is far quicker).
PUBLISHED_MEMORY_S = 30.0
PUBLISHED_MEMORY = 64
#: Batches a subscriber may fall behind by before it is told to read from the store instead.
WATCH_BACKLOG = 64
#: Subscribers handed a batch per turn of the event loop: between two handfuls the loop
#: serves everything else (mutations, reads), so a fan-out to hundreds of subscribers does
#: not queue every other request behind all of its wake-ups.
DELIVERY_CHUNK = 32


class Watch:
    """One subscriber's inbox. A subscriber that stops reading (a stalled websocket) does not
    grow it without bound: past the backlog, deliveries stop and `next` tells the subscriber
    to catch up from the store, which has everything."""

    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._batches = 0
        self._waiter: asyncio.Future[None] | None = None
        self.behind = False
        # One timer outlives many waits (see `next`): when the current wait ends, and the
        # timer armed for it or for an earlier one.
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        #: Set by a subscriber that can take rows synchronously (send them on itself): while
        #: it waits with nothing pending, deliveries go straight to it, without waking its
        #: task; it returns how many of the rows it took, and the rest wake it as usual.
        self.push: Callable[[list[Row]], int] | None = None

    @property
    def pending(self) -> int:
        """Batches delivered and not yet taken."""
        return self._batches

    def deliver(self, rows: list[Row]) -> None:
        if self.behind:
            return
        if self.push is not None and not self._rows and self.waiting:
            try:
                taken = self.push(rows)
            except Exception:  # the subscriber's own path then meets it, in its own task
                log.exception("event tail: a subscriber could not take its events; no more pushes")
                self.push = None  # one traceback per subscriber, not one per event
                taken = 0
            if taken >= len(rows):
                return
            rows = rows[taken:]
        if self._batches >= WATCH_BACKLOG:
            self.behind = True
            self._rows, self._batches = [], 0
        else:
            self._rows.extend(rows)
            self._batches += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def waiting(self) -> bool:
        """The subscriber is parked in `next`."""
        return self._waiter is not None and not self._waiter.done()

    async def next(self, timeout: float) -> list[Row] | None:
        """New rows; None when it fell behind (read the store), [] when nothing came in
        time. Waits on one future (no task per wait: this is every subscriber's per-event
        path); the timer that ends a wait is armed once and serves the waits after it
        (a subscriber woken every few milliseconds would otherwise arm and cancel one per
        event): when it rings before the current wait is due, it is armed again for that."""
        if not self._rows and not self.behind:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + timeout
            if self._timer is None or self._timer.when() > self._due:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self._due, self._ring, loop)
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self.behind:
            self.behind = False
            return None
        rows, self._rows, self._batches = self._rows, [], 0
        return rows

    def close(self) -> None:
        """The subscriber is gone: its timer goes too."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ring(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # between waits: the next one arms its own
        if loop.time() >= self._due:
            waiter.set_result(None)
        else:
            self._timer = loop.call_at(self._due, self._ring, loop)


class EventTail:
    """Tails one context's event store for the subscriptions of this process."""

    def __init__(
        self,
        store: WorkflowStore | ExecutionStore,
        database_url: str,
        poll_interval_s: float = 1.0,
        *,
        context: str = "workflow",
    ):
        self._store = store
        self._context = context
        self._database_url = database_url
        self._poll_interval_s = poll_interval_s
        self._watchers: dict[UUID, set[Watch]] = {}
        self._position = 0
        self._task: asyncio.Task[None] | None = None
        self._lookups = asyncio.Semaphore(LOOKUPS)
        self._moved = asyncio.Condition()
        #: The store's head as read by the newest lookup, and when that lookup started.
        self._head: asyncio.Task[int] | None = None
        self._head_asked = 0.0
        #: Per workspace, (when seen, workflow, version number) of its latest publishes
        #: (workflow context only).
        self._published: dict[str, deque[tuple[float, UUID, int]]] = {}
        self._published_topic = (
            get_topic(Workflow.Published) if context == "workflow" else None  # type: ignore[attr-defined]
        )

    async def start(self) -> None:
        newest: int | None = await asyncio.to_thread(self._store.recorder.max_notification_id)
        self._position = newest or 0
        self._task = asyncio.create_task(self._run(), name=f"{self._context}-event-tail")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def watch(self, aggregate_id: UUID) -> AsyncIterator[Watch]:
        """The aggregate's new events, in version order, for one subscriber."""
        watch = Watch()
        self._watchers.setdefault(aggregate_id, set()).add(watch)
        try:
            yield watch
        finally:
            watch.close()
            watchers = self._watchers.get(aggregate_id, set())
            watchers.discard(watch)
            if not watchers:
                self._watchers.pop(aggregate_id, None)

    async def events_after(self, aggregate_id: UUID, version: int) -> list[Row]:
        """Stored events of the aggregate above `version`, oldest first (at most a page)."""

        def read() -> list[Row]:
            events = self._store.repository.event_store.get(
                aggregate_id, gt=version, limit=READ_LIMIT
            )
            return [row_of(e, context=self._context) for e in events]

        return await asyncio.to_thread(read)

    async def first_and_last(self, aggregate_id: UUID) -> tuple[Row, Row] | None:
        """The aggregate's first and latest stored events, None when it does not exist."""

        def read() -> tuple[Row, Row] | None:
            event_store = self._store.repository.event_store
            first = list(event_store.get(aggregate_id, limit=1))
            if not first:
                return None
            last = list(event_store.get(aggregate_id, desc=True, limit=1))
            return row_of(first[0], context=self._context), row_of(last[0], context=self._context)

        return await asyncio.to_thread(read)

    async def workspace_of(self, aggregate_id: UUID) -> str | None:
        """The workspace an aggregate belongs to, None when it does not exist."""
        found = await self.origin(aggregate_id)
        return found[1] if found else None

    async def origin(self, aggregate_id: UUID) -> tuple[str, str] | None:
        """The type of the aggregate's first event (`ExecutionStarted`: an execution, not a
        credential) and its workspace; None when it does not exist. At most `LOOKUPS` at a
        time in this process: any caller may ask about any id, and each takes a thread and a
        store connection that event deliveries and commands also need."""

        def read() -> tuple[str, str] | None:
            first = list(self._store.repository.event_store.get(aggregate_id, limit=1))
            if not first:
                return None
            row = row_of(first[0], context=self._context)
            return str(row["type"]), str(row["workspace_id"])

        async with self._lookups:
            return await asyncio.to_thread(read)

    async def reach_head(self, timeout: float) -> bool:
        """Wait until this tail has read everything the store held when asked (at most
        `timeout` seconds); whether it has. Callers asking at once share one lookup of the
        store's head, begun after they asked (anyone may ask: a webhook that found nothing)."""
        asked = time.monotonic()
        deadline = asked + timeout
        if self._head is None or (self._head_asked < asked and self._head.done()):
            self._start_head_lookup()
        elif self._head_asked < asked:  # under way, but may have read before we asked
            previous = self._head
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(previous), timeout)
            if not previous.done():
                return False  # the store is slower than the wait: no second lookup beside it
            if self._head is previous:
                self._start_head_lookup()
        assert self._head is not None
        try:
            head = await asyncio.wait_for(
                asyncio.shield(self._head), max(0.0, deadline - time.monotonic())
            )
        except Exception:  # a timeout, the store unreachable (PersistenceError): not reached
            return False
        async with self._moved:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._moved.wait_for(lambda: self._position >= head),
                    max(0.0, deadline - time.monotonic()),
                )
            return self._position >= head

    def _start_head_lookup(self) -> None:
        self._head_asked = time.monotonic()
        self._head = asyncio.create_task(self._read_head())
        # Its failure is each waiter's to see; with none left, it is dropped here unlogged.
        self._head.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _read_head(self) -> int:
        return await asyncio.to_thread(self._store.recorder.max_notification_id) or 0

    def recently_published(self, workspace_id: str) -> dict[UUID, int]:
        """The workflows of the workspace published in the last `PUBLISHED_MEMORY_S` seconds,
        each with its latest version number (whether or not the read model has it yet)."""
        horizon = time.monotonic() - PUBLISHED_MEMORY_S
        latest: dict[UUID, int] = {}
        for at, workflow_id, number in self._published.get(workspace_id, ()):
            if at >= horizon:
                latest[workflow_id] = max(latest.get(workflow_id, 0), number)
        return latest

    def _remember(self, published: list[tuple[str, UUID, int]]) -> None:
        now = time.monotonic()
        for workspace_id, workflow_id, number in published:
            memory = self._published.setdefault(workspace_id, deque(maxlen=PUBLISHED_MEMORY))
            memory.append((now, workflow_id, number))
        if published:  # forget workspaces that published nothing lately
            horizon = now - PUBLISHED_MEMORY_S
            for workspace_id in [w for w, m in self._published.items() if m[-1][0] < horizon]:
                del self._published[workspace_id]

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
                log.warning("%s event tail: %s; reconnecting", self._context, exc)
                await asyncio.sleep(self._poll_interval_s)
            except Exception:  # a bug must not silence every subscription of the process
                log.exception("%s event tail failed; restarting it", self._context)
                await asyncio.sleep(self._poll_interval_s)

    async def _read(self) -> None:
        while True:
            batch = await asyncio.to_thread(self._select, self._position)
            if batch is None:
                return
            self._position, rows, published = batch
            self._remember(published)
            async with self._moved:
                self._moved.notify_all()
            handed = 0
            for aggregate_id, new in rows.items():
                for watch in list(self._watchers.get(aggregate_id, ())):
                    watch.deliver(new)
                    handed += 1
                    if handed % DELIVERY_CHUNK == 0:
                        await asyncio.sleep(0)

    def _select(
        self, after: int
    ) -> tuple[int, dict[UUID, list[Row]], list[tuple[str, UUID, int]]] | None:
        """The next round of notifications: its last position, the decoded events of the
        watched aggregates (others are not decoded) and the (workspace, workflow, version
        number) of each publish. None when there is nothing new.

        Who watches is asked after the read, not before: a subscriber that registered
        meanwhile gets these events here, or (registered later still) reads them itself."""
        notifications = self._store.recorder.select_notifications(
            start=after, limit=READ_LIMIT, inclusive_of_start=False
        )
        if not notifications:
            return None
        rows: dict[UUID, list[Row]] = {}
        published: list[tuple[str, UUID, int]] = []
        for n in notifications:
            aggregate_id = UUID(str(n.originator_id))
            publish = n.topic == self._published_topic
            if aggregate_id not in self._watchers and not publish:
                continue
            try:
                row = row_of(self._store.mapper.to_domain_event(n), n.id, self._context)
                if publish:
                    number = int(row["payload"]["version_number"])
                    published.append((str(row["workspace_id"]), aggregate_id, number))
            except Exception:  # one bad event must not stall every subscription
                log.exception(
                    "%s event tail: cannot decode notification %s; skipped", self._context, n.id
                )
                continue
            if aggregate_id in self._watchers:
                rows.setdefault(aggregate_id, []).append(row)
        return notifications[-1].id, rows, published
