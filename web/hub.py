"""Fan-out of read-model change notices inside one api process.

One Redis subscription per api process; per watched workflow one `Feed` that, on each notice,
reads the new history rows once and hands them to every local subscriber. So 500 watchers of
one workflow cost one Redis channel and one query per change, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis

from query_side.views import EVENTS_PAGE

log = logging.getLogger(__name__)

Row = dict[str, Any]
Fetch = Callable[[str, UUID, int], Awaitable[list[Row]]]
CurrentVersion = Callable[[str, UUID], Awaitable[int | None]]


def workflow_channel(workspace_id: str, workflow_id: UUID) -> str:
    return f"autoops:{workspace_id}:workflow:{workflow_id}"


class Feed:
    """The live rows of one workflow, fetched once per notice, fanned out to queues."""

    def __init__(self, hub: Hub, workspace_id: str, workflow_id: UUID) -> None:
        self.hub = hub
        self.workspace_id = workspace_id
        self.workflow_id = workflow_id
        self.last = 0
        self.queues: set[asyncio.Queue[list[Row]]] = set()
        self.version_seen = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, initial_version: int) -> None:
        self.last = initial_version
        self._task = asyncio.create_task(self._pump(), name=f"feed-{self.workflow_id}")

    def notify(self) -> None:
        self._wake.set()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                rows = await self.hub.fetch(self.workspace_id, self.workflow_id, self.last)
            except Exception:  # a failed read is retried on the next notice
                log.exception("feed %s: reading new rows failed", self.workflow_id)
                continue
            if not rows:
                continue
            self.last = rows[-1]["version"]
            for q in self.queues:
                q.put_nowait(rows)
            self.version_seen.set()
            self.version_seen = asyncio.Event()
            if len(rows) >= self.hub.page:  # a burst larger than one read: read on at once
                self._wake.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Hub:
    """Routes Redis change notices to the feeds of this process."""

    def __init__(
        self, redis: aioredis.Redis, fetch: Fetch, current_version: CurrentVersion
    ) -> None:
        self.redis = redis
        self.fetch = fetch
        self._current_version = current_version
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._feeds: dict[str, Feed] = {}
        self._users: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        #: Rows `fetch` returns at most per call.
        self.page = EVENTS_PAGE

    async def start(self) -> None:
        # Subscribing to a channel of its own puts the connection in subscribe mode at once.
        await self._pubsub.subscribe("autoops:hub")
        self._reader = asyncio.create_task(self._read(), name="hub-reader")

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for feed in self._feeds.values():
            await feed.stop()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except aioredis.ConnectionError:
                log.warning("hub: Redis connection lost; resubscribing")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            feed = self._feeds.get(channel)
            if feed is not None:
                feed.notify()

    @contextlib.asynccontextmanager
    async def feed(self, workspace_id: str, workflow_id: UUID) -> AsyncIterator[Feed]:
        """Use the workflow's feed (started on first use, stopped after the last)."""
        channel = workflow_channel(workspace_id, workflow_id)
        async with self._lock:
            feed = self._feeds.get(channel)
            if feed is None:
                feed = Feed(self, workspace_id, workflow_id)
                # Subscribe before reading the version, so no change falls in between.
                await self._pubsub.subscribe(channel)
                feed.start(await self._current_version(workspace_id, workflow_id) or 0)
                self._feeds[channel] = feed
            self._users[channel] = self._users.get(channel, 0) + 1
        try:
            yield feed
        finally:
            async with self._lock:
                self._users[channel] -= 1
                if self._users[channel] == 0:
                    del self._users[channel]
                    gone = self._feeds.pop(channel)
                    await self._pubsub.unsubscribe(channel)
                    await gone.stop()
