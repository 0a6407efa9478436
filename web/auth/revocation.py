"""Revocation state in Redis: ended sessions and access that changed (role, membership,
password), each kept as long as an access token issued before it could still be presented.

The event store is the truth: when Redis comes back empty (the marker key is gone), the state
is rebuilt from the identity events of the last token lifetime before any token is trusted.

Every api process keeps the marks it has read, so a request's check needs no round trip to
Redis: each change is written together with a message on `CHANGES` (one MULTI), and every
process applies the messages to what it keeps. What it keeps is trusted only while its
subscription is up: it is dropped when the subscription drops and again when it is back, and
meanwhile checks read Redis as before. A change reaches the other api processes one pub/sub
delivery after it was written (about a millisecond), the process that made it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from command_side.contracts.envelope import Envelope
from web.auth.tokens import Principal

log = logging.getLogger(__name__)

PREFIX = "autoops:auth"
BUILT = f"{PREFIX}:built"
#: Envelopes of the identity log, in order (the rebuild reads them in a worker thread).
IdentityLogReader = Callable[[], Iterable[list[Envelope]]]


def _session_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}"


def _member_key(workspace_id: str, user_id: str) -> str:
    return f"{PREFIX}:member:{workspace_id}:{user_id}"


def _user_key(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}"


#: Sets a mark only if it is newer than the one there (a rebuild racing a live change).
_SET_NEWER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
"""
#: How often the Redis server's identity is read: a server restarted from a snapshot keeps
#: the BUILT marker but may have lost recent revocations.
SERVER_CHECK_S = 5.0
#: Pub/sub channel of changes: "<key> <value>" for a mark set, FORGET after a rebuild.
CHANGES = f"{PREFIX}:changes"
FORGET = "*"
#: Most marks an api process keeps (past it, it starts again from empty).
KEPT_MAX = 100_000
#: The listener pings its subscription this often, and kept marks are trusted only while it
#: heard from Redis within LIVE_WITHIN_S: a connection that died without a reset (a host gone,
#: a partition) is not noticed by the socket until TCP keepalive gives up.
PING_EVERY_S = 1.0
LIVE_WITHIN_S = 3.0


@dataclass
class Batch:
    """Keys wanted in one turn of the event loop, and their values once read."""

    values: asyncio.Future[dict[str, bytes | str | None]]
    keys: dict[str, None] = field(default_factory=dict)


class Revocations:
    def __init__(self, redis: aioredis.Redis, token_ttl_s: int, read_log: IdentityLogReader):
        self._redis = redis
        self._ttl_s = token_ttl_s + 60  # tokens are accepted a few seconds past expiry
        self._read_log = read_log
        self._rebuilding = asyncio.Lock()
        self._server: str | None = None
        self._server_checked = 0.0
        self._batch: Batch | None = None
        self._reading: set[asyncio.Future[Any]] = set()
        #: Values of mark keys read or heard of (None: no mark), trusted while `_live`.
        self._kept: dict[str, bytes | str | None] = {}
        self._live = False
        self._heard_at = 0.0  # monotonic: the subscription's last word
        #: Counts drops of `_kept` and changes heard: a read that overlapped one keeps nothing.
        self._changes = 0
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for changes (until `close`); checks read Redis until the listener is up."""
        self._listener = asyncio.create_task(self._listen(), name="revocation-changes")

    @property
    def listening(self) -> bool:
        """Checks are answered from the marks this process keeps: its subscription is up and
        answered lately."""
        return self._live and time.monotonic() - self._heard_at < LIVE_WITHIN_S

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            pinged = 0.0
            while True:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(CHANGES)
                    if time.monotonic() - pinged >= PING_EVERY_S:
                        pinged = time.monotonic()
                        await pubsub.ping()
                    message = await pubsub.get_message(timeout=PING_EVERY_S)
                except (aioredis.RedisError, OSError) as exc:
                    self._forget(live=False)
                    log.warning("revocations: change listener lost Redis (%s); retrying", exc)
                    await pubsub.reset()  # type: ignore[no-untyped-call]
                    await asyncio.sleep(0.5)
                    continue
                if message is None:
                    continue
                self._heard_at = time.monotonic()
                if message["type"] == "subscribe":
                    # (Re)subscribed: what was kept before may have missed changes, and the
                    # server may be another one (restarted from a snapshot): ask again.
                    self._server = None
                    self._forget(live=True)
                elif message["type"] == "message":
                    self._heard(_text(message["data"]) or "")
        finally:
            self._forget(live=False)
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _forget(self, *, live: bool) -> None:
        self._kept = {}
        self._changes += 1
        self._live = live

    def _heard(self, change: str) -> None:
        if change == FORGET:
            self._forget(live=self._live)
            return
        key, _, value = change.partition(" ")
        self._changes += 1
        if self._live:
            self._keep(key, value)

    def _keep(self, key: str, value: bytes | str | None) -> None:
        if len(self._kept) >= KEPT_MAX:
            self._kept = {}
        self._kept[key] = value

    async def _mget(self, keys: list[str]) -> list[bytes | str | None]:
        """The keys' values. Reads asked for in one turn of the event loop (every live
        subscription of an api process re-checks its caller every few seconds, mostly
        together) share one MGET of their distinct keys. A caller cancelled meanwhile
        (its subscription ended) leaves the shared read to the others."""
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self._batch = Batch(loop.create_future())
            loop.call_soon(self._dispatch, self._batch)  # after this turn's other callers
        batch = self._batch
        batch.keys.update(dict.fromkeys(keys))
        values = await asyncio.shield(batch.values)
        return [values[key] for key in keys]

    def _dispatch(self, batch: Batch) -> None:
        self._batch = None
        distinct = list(batch.keys)
        read = asyncio.ensure_future(self._redis.mget(distinct))
        self._reading.add(read)

        def done(read: asyncio.Future[list[bytes | str | None]]) -> None:
            self._reading.discard(read)
            if read.cancelled():
                batch.values.cancel()
            elif (error := read.exception()) is not None:
                batch.values.set_exception(error)
            else:
                batch.values.set_result(dict(zip(distinct, read.result(), strict=True)))

        read.add_done_callback(done)

    async def _server_id(self) -> str:
        """The run id of the Redis server (a new one after every restart)."""
        if self._server is None or time.monotonic() - self._server_checked > SERVER_CHECK_S:
            # Checks meanwhile keep the id read a moment ago instead of asking again; a
            # failed read lets the next check ask again.
            checked, self._server_checked = self._server_checked, time.monotonic()
            try:
                self._server = str((await self._redis.info("server"))["run_id"])
            except BaseException:
                self._server_checked = checked
                raise
        return self._server

    async def check(self, principal: Principal, *, batched: bool = False) -> str | None:
        """Why the token may no longer be used, or None. `batched`: share one Redis read with
        the other checks of this turn of the event loop (a live subscription's re-check; a
        request's own check goes straight out, a batch costs it two turns of the loop)."""
        marks = [
            _session_key(principal.session_id),
            _member_key(principal.workspace_id, principal.user_id),
            _user_key(principal.user_id),
        ]
        kept = self._kept
        if self.listening and all(key in kept for key in marks):
            session, member, user = (kept[key] for key in marks)
        else:
            session, member, user = await self._read(marks, batched)
        if session is not None:
            return "the session has ended; sign in again"
        changed = max(int(member or 0), int(user or 0))
        if principal.issued_ms < changed:
            return "your access changed since this token was issued; refresh it"
        return None

    async def _read(self, marks: list[str], batched: bool) -> list[bytes | str | None]:
        """The marks' values from Redis (rebuilding it first if it lost them), kept when no
        change was heard meanwhile."""
        changes, live = self._changes, self.listening
        read = self._mget if batched else self._redis.mget
        built, *values = await read([BUILT, *marks])
        server = await self._server_id()
        if _text(built) != server:
            await self.rebuild()
            built, *values = await self._redis.mget([BUILT, *marks])
        if live and self.listening and changes == self._changes:
            for key, value in zip(marks, values, strict=True):
                self._keep(key, value)
        return values

    async def _set(self, key: str, value: int) -> None:
        """Set a mark and tell every api process (this one at once)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, value, ex=self._ttl_s)
            pipe.publish(CHANGES, f"{key} {value}")
            await pipe.execute()
        # Here at once: the next check reads the mark (the message, or another process's
        # later change heard meanwhile, may not be the last word on it).
        self._changes += 1
        self._kept.pop(key, None)

    async def session_ended(self, session_id: str) -> None:
        await self._set(_session_key(session_id), 1)

    async def access_changed(self, workspace_id: str, user_id: str) -> None:
        """Tokens of the user in the workspace issued until now stop working."""
        now_ms = time.time_ns() // 1_000_000
        await self._set(_member_key(workspace_id, user_id), now_ms)

    async def credentials_changed(self, user_id: str) -> None:
        now_ms = time.time_ns() // 1_000_000
        await self._set(_user_key(user_id), now_ms)

    async def rebuild(self) -> None:
        """Restore the state from the identity events of the last token lifetime, when this
        Redis server has not been given it (a new or emptied server)."""
        async with self._rebuilding:
            self._server = None  # read the server's identity afresh
            server = await self._server_id()
            built = await self._redis.get(BUILT)
            if _text(built) == server:
                return
            count = await self._restore(server)
            log.warning("revocations rebuilt from the event store (%d entries)", count)

    async def top_up(self) -> None:
        """Set every mark the identity events of the last token lifetime call for, keeping
        any later one. An api process does this as it starts: one killed between committing
        a logout, a removal or a password change and setting its mark left the revocation in
        the store only, and the tokens it ends would otherwise work until they expire."""
        async with self._rebuilding:
            self._server = None
            await self._restore(await self._server_id())

    async def _restore(self, server: str) -> int:
        since = time.time() - self._ttl_s
        marks = await asyncio.to_thread(_marks_since, self._read_log, since)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, value, at in marks:
                remaining = int(at + self._ttl_s - time.time())
                if remaining > 0:
                    pipe.eval(_SET_NEWER, 1, key, value, remaining)
            pipe.set(BUILT, server)
            pipe.publish(CHANGES, FORGET)  # every process reads the marks afresh
            await pipe.execute()
        self._forget(live=self._live)
        return len(marks)


def _marks_since(read_log: IdentityLogReader, since: float) -> list[tuple[str, int, float]]:
    marks: list[tuple[str, int, float]] = []
    for batch in read_log():
        for e in batch:
            at = datetime.fromisoformat(e["occurred_at"]).timestamp()
            if at < since:
                continue
            kind, data = e["type"], e["data"]
            at_ms = int(at * 1000) + 1  # tokens minted in the same millisecond go too
            if kind == "identity.SessionRevoked":
                marks.append((_session_key(e["aggregate_id"]), 1, at))
            elif kind in ("identity.MemberRoleChanged", "identity.MemberRemoved"):
                marks.append((_member_key(e["workspace_id"], data["member_id"]), at_ms, at))
            elif kind == "identity.PasswordChanged":
                marks.append((_user_key(e["aggregate_id"]), at_ms, at))
    return marks


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
