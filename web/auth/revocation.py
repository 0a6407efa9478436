"""Revocation state in Redis: ended sessions and access that changed (role, membership,
password), each kept as long as an access token issued before it could still be presented.

The event store is the truth: when Redis comes back empty (the marker key is gone), the state
is rebuilt from the identity events of the last token lifetime before any token is trusted.
"""

from __future__ import annotations

import asyncio
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
        keys = [
            BUILT,
            _session_key(principal.session_id),
            _member_key(principal.workspace_id, principal.user_id),
            _user_key(principal.user_id),
        ]
        read = self._mget if batched else self._redis.mget
        built, session, member, user = await read(keys)
        server = await self._server_id()
        if _text(built) != server:
            await self.rebuild()
            built, session, member, user = await self._redis.mget(keys)
        if session is not None:
            return "the session has ended; sign in again"
        changed = max(int(member or 0), int(user or 0))
        if principal.issued_ms < changed:
            return "your access changed since this token was issued; refresh it"
        return None

    async def session_ended(self, session_id: str) -> None:
        await self._redis.set(_session_key(session_id), 1, ex=self._ttl_s)

    async def access_changed(self, workspace_id: str, user_id: str) -> None:
        """Tokens of the user in the workspace issued until now stop working."""
        now_ms = time.time_ns() // 1_000_000
        await self._redis.set(_member_key(workspace_id, user_id), now_ms, ex=self._ttl_s)

    async def credentials_changed(self, user_id: str) -> None:
        now_ms = time.time_ns() // 1_000_000
        await self._redis.set(_user_key(user_id), now_ms, ex=self._ttl_s)

    async def rebuild(self) -> None:
        """Restore the state from the identity events of the last token lifetime."""
        async with self._rebuilding:
            self._server = None  # read the server's identity afresh
            server = await self._server_id()
            built = await self._redis.get(BUILT)
            if _text(built) == server:
                return
            since = time.time() - self._ttl_s
            marks = await asyncio.to_thread(_marks_since, self._read_log, since)
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value, at in marks:
                    remaining = int(at + self._ttl_s - time.time())
                    if remaining > 0:
                        pipe.eval(_SET_NEWER, 1, key, value, remaining)
                pipe.set(BUILT, server)
                await pipe.execute()
            log.warning("revocations rebuilt from the event store (%d entries)", len(marks))


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
