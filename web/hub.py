"""Read-model change notices inside one api process, for reads that wait on their writes.

One Redis subscription per api process; per watched aggregate (a workflow, an execution) one
`Feed` whose `version_seen` fires when the projector reports a newer version of its read model.
So 500 `atLeastVersion` waits on one workflow cost one Redis channel, not 500. (Subscriptions
get their events from the event store: `web.tail`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import UUID

import redis.asyncio as aioredis

from projections.notices import aggregate_channel

log = logging.getLogger(__name__)

# (context, workspace id, aggregate id) -> the read model's version, None while it has none.
CurrentVersion = Callable[[str, str, UUID], Awaitable[int | None]]


class Feed:
    """The read-model version of one aggregate, as the projector's notices report it."""

    def __init__(self) -> None:
        self.last = 0
        self.version_seen = asyncio.Event()

    def notify(self, version: int) -> None:
        if version <= self.last:
            return
        self.last = version
        self.version_seen.set()
        self.version_seen = asyncio.Event()


class Hub:
    """Routes Redis change notices to the feeds of this process."""

    def __init__(self, redis: aioredis.Redis, current_version: CurrentVersion) -> None:
        self._current_version = current_version
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._feeds: dict[str, Feed] = {}
        self._users: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Subscribing to a channel of its own puts the connection in subscribe mode at once.
        await self._pubsub.subscribe("autoops:hub")
        self._reader = asyncio.create_task(self._read(), name="hub-reader")

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
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
                try:
                    feed.notify(int(json.loads(message["data"])["version"]))
                except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
                    log.warning("hub: malformed notice on %s", channel)

    @contextlib.asynccontextmanager
    async def feed(
        self, workspace_id: str, aggregate_id: UUID, context: str = "workflow", absent: bool = False
    ) -> AsyncIterator[Feed]:
        """Use the aggregate's feed (started on first use, stopped after the last). `absent`:
        the caller just found no read model of it, so there is no version to look up."""
        channel = aggregate_channel(workspace_id, context, str(aggregate_id))
        async with self._lock:
            feed = self._feeds.get(channel)
            if feed is None:
                feed = Feed()
                # Subscribe before reading the version, so no change falls in between. (The
                # SUBSCRIBE is sent, not yet confirmed: a notice in that instant is missed,
                # which costs a waiting read its deadline, never a wrong answer: it reads
                # once more then.)
                await self._pubsub.subscribe(channel)
                if not absent:
                    version = await self._current_version(context, workspace_id, aggregate_id)
                    feed.notify(version or 0)
                self._feeds[channel] = feed
            self._users[channel] = self._users.get(channel, 0) + 1
        try:
            yield feed
        finally:
            async with self._lock:
                self._users[channel] -= 1
                if self._users[channel] == 0:
                    del self._users[channel]
                    del self._feeds[channel]
                    await self._pubsub.unsubscribe(channel)
