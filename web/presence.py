"""Presence: who has a workflow open, what node each has selected, where each cursor is.

Ephemeral, so in Redis and never in the event store. Each open editor is a session in one
hash per workflow (`autoops:<workspace>:presence:<workflow>`, field = session id); when each
was last seen is a field of a second hash (`…:seen`), so refreshing it never rewrites (and
never races with) a cursor move. Its api process refreshes the stamp while the session's
subscription lives (each refresh also keeps both hashes from expiring: a session that only
heartbeats stays as long as one that moves), and the subscription ends when its websocket stops
answering pings. A session whose stamp is older than the timeout (its api process died) is
dropped by whichever reader notices first. Changes are announced on a Redis
channel, so every api process's subscribers hear of sessions on the others; one pattern
subscription per process fans them out. Cursor updates are throttled: however often a client
sends them, a session's changes are announced at most once per throttle interval (the last
position wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

PATTERN = "autoops:*:presence:*:changes"


class Unchanged(enum.Enum):
    """What `Presence.move` is given for a part of a session to leave as it is."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def _key(workspace_id: str, workflow_id: str) -> str:
    return f"autoops:{workspace_id}:presence:{workflow_id}"


def _seen_key(workspace_id: str, workflow_id: str) -> str:
    return f"autoops:{workspace_id}:presence:{workflow_id}:seen"


@dataclass
class _Watchers:
    queues: set[asyncio.Queue[None]] = field(default_factory=set)


class Presence:
    """The presence of every workflow, for the subscribers of this api process."""

    def __init__(self, redis: aioredis.Redis, timeout_s: float, throttle_s: float) -> None:
        self._redis = redis
        self.timeout_s = timeout_s
        self.throttle_s = throttle_s
        self._watchers: dict[str, _Watchers] = {}
        self._listener: asyncio.Task[None] | None = None
        self._last_announced: dict[str, float] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        # The hashes go once nobody has been there for a while (every session long stale).
        self._keep_s = max(int(timeout_s * 10), 60)

    # -- sessions -----------------------------------------------------------------------------

    async def join(
        self, workspace_id: str, workflow_id: str, session: str, user_id: str, node: str | None
    ) -> None:
        entry = {"user_id": user_id, "node_id": node, "cursor": None, "seen": time.time()}
        await self._write(workspace_id, workflow_id, session, entry)
        await self._announce(workspace_id, workflow_id)

    async def touch(self, workspace_id: str, workflow_id: str, session: str) -> None:
        """The session is still there (its subscription lives)."""
        key, seen_key = _key(workspace_id, workflow_id), _seen_key(workspace_id, workflow_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(seen_key, session, repr(time.time()))
            pipe.expire(seen_key, self._keep_s)
            pipe.expire(key, self._keep_s)
            await pipe.execute()

    async def move(
        self,
        workspace_id: str,
        workflow_id: str,
        session: str,
        user_id: str,
        node: str | Unchanged | None = UNCHANGED,
        cursor: dict[str, float] | Unchanged | None = UNCHANGED,
    ) -> bool:
        """Change a session's selection and cursor (None: no node selected, no cursor on the
        canvas; UNCHANGED, the default: as it was); False when the session is not the caller's
        (or is gone). Announced at most once per throttle interval per session."""
        entry = await self._entry(workspace_id, workflow_id, session)
        if entry is None or entry["user_id"] != user_id:
            return False
        if node is not UNCHANGED:
            entry["node_id"] = node
        if cursor is not UNCHANGED:
            entry["cursor"] = cursor
        entry["seen"] = time.time()
        await self._write(workspace_id, workflow_id, session, entry)
        await self._announce(workspace_id, workflow_id, throttled=session)
        return True

    async def leave(self, workspace_id: str, workflow_id: str, session: str) -> None:
        self._last_announced.pop(session, None)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(_key(workspace_id, workflow_id), session)
            pipe.hdel(_seen_key(workspace_id, workflow_id), session)
            await pipe.execute()
        await self._announce(workspace_id, workflow_id)

    async def members(self, workspace_id: str, workflow_id: str) -> list[dict[str, Any]]:
        """The sessions seen within the timeout, oldest arrival first; older ones are dropped
        (and the drop announced)."""
        key, seen_key = _key(workspace_id, workflow_id), _seen_key(workspace_id, workflow_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            pipe.hgetall(seen_key)
            raw, stamps = await pipe.execute()
        limit = time.time() - self.timeout_s
        alive, stale = [], []
        for session, value in raw.items():
            try:
                entry = json.loads(value)
                seen = max(float(entry.get("seen", 0)), float(stamps.get(session, 0)))
            except ValueError:
                stale.append(session)
                continue
            if seen < limit:
                stale.append(session)
            else:
                alive.append({"session_id": session.decode(), **entry, "seen": seen})
        # Stamps of sessions that left while their last refresh was on its way.
        strays = [session for session in stamps if session not in raw]
        if stale or strays:
            async with self._redis.pipeline(transaction=False) as pipe:
                if stale:
                    pipe.hdel(key, *stale)
                pipe.hdel(seen_key, *stale, *strays)
                await pipe.execute()
        if stale:
            await self._announce(workspace_id, workflow_id)
        return sorted(alive, key=lambda e: (e["user_id"], e["session_id"]))

    async def _entry(
        self, workspace_id: str, workflow_id: str, session: str
    ) -> dict[str, Any] | None:
        raw = await self._redis.hget(_key(workspace_id, workflow_id), session)  # type: ignore[misc]
        return dict(json.loads(raw)) if raw else None

    async def _write(
        self, workspace_id: str, workflow_id: str, session: str, entry: dict[str, Any]
    ) -> None:
        key = _key(workspace_id, workflow_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, session, json.dumps(entry))
            pipe.expire(key, self._keep_s)
            await pipe.execute()

    # -- announcements ---------------------------------------------------------------------

    async def _announce(
        self, workspace_id: str, workflow_id: str, throttled: str | None = None
    ) -> None:
        channel = _key(workspace_id, workflow_id) + ":changes"
        if throttled is None:
            await self._redis.publish(channel, b"")
            return
        now = time.monotonic()
        wait = self._last_announced.get(throttled, 0.0) + self.throttle_s - now
        if wait <= 0:
            self._last_announced[throttled] = now
            await self._redis.publish(channel, b"")
        elif throttled not in self._pending:  # one later announcement carries the last state

            async def later() -> None:
                try:
                    await asyncio.sleep(wait)
                    self._last_announced[throttled] = time.monotonic()
                    await self._redis.publish(channel, b"")
                finally:
                    self._pending.pop(throttled, None)

            self._pending[throttled] = asyncio.create_task(later())

    @contextlib.asynccontextmanager
    async def watch(self, workspace_id: str, workflow_id: str) -> AsyncIterator[Any]:
        """A queue that gets an item whenever the workflow's presence may have changed."""
        await self._listen()
        channel = _key(workspace_id, workflow_id) + ":changes"
        queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        watchers = self._watchers.setdefault(channel, _Watchers())
        watchers.queues.add(queue)
        try:
            yield queue
        finally:
            watchers.queues.discard(queue)
            if not watchers.queues:
                self._watchers.pop(channel, None)

    async def _listen(self) -> None:
        if self._listener is None or self._listener.done():
            ready = asyncio.Event()
            self._listener = asyncio.create_task(self._read(ready), name="presence-listener")
            await asyncio.wait_for(ready.wait(), 10)

    async def _read(self, ready: asyncio.Event) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(PATTERN)
                ready.set()
                async for message in pubsub.listen():
                    channel = message.get("channel")
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    for queue in list(self._watchers.get(name, _Watchers()).queues):
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait(None)  # one pending wake-up is enough
            except (aioredis.ConnectionError, OSError) as exc:
                log.warning("presence: Redis connection lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        for task in [self._listener, *self._pending.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
