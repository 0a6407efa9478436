"""Revocation marks kept per api process: a check needs no Redis round trip, a change made by
one process reaches the others over pub/sub, and what a process kept is dropped whenever its
subscription was down (it may have missed changes meanwhile). Real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from tests.waiting import eventually
from web.auth import revocation
from web.auth.revocation import PREFIX, Revocations, _session_key
from web.auth.tokens import Principal


class Counted:
    """An api process's Redis client, its reads counted."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.reads = 0
        real = self.client.mget

        async def mget(keys: Any, *args: Any) -> Any:
            self.reads += 1
            return await real(keys, *args)

        self.client.mget = mget  # type: ignore[method-assign]


def principal(issued_ms: int | None = None) -> Principal:
    return Principal(
        f"u-{uuid4().hex[:8]}",
        f"ws-{uuid4().hex[:8]}",
        "EDITOR",
        f"s-{uuid4().hex[:8]}",
        int(time.time() * 1000) if issued_ms is None else issued_ms,
        time.time() + 600,
    )


@pytest.fixture
async def processes(redis_url: str) -> AsyncIterator[list[tuple[Revocations, Counted]]]:
    """Two api processes' revocation state on one Redis, both listening."""
    made = []
    for _ in range(2):
        redis = Counted(redis_url)
        made.append((Revocations(redis.client, 900, lambda: []), redis))
    await made[0][0].rebuild()  # marked built for this server before anyone listens
    for revocations, redis in made:
        await revocations.start()
        redis.reads = 0
    for revocations, _ in made:

        async def up(r: Revocations = revocations) -> bool:
            return r.listening

        await eventually(up, 5, "the change listener subscribed")
    yield made
    for revocations, redis in made:
        await revocations.close()
        await redis.client.aclose()


async def test_a_check_reads_redis_once_then_answers_from_what_it_kept(
    processes: list[tuple[Revocations, Counted]],
) -> None:
    (revocations, redis), _ = processes
    who = principal()
    assert await revocations.check(who) is None
    assert redis.reads == 1
    for _ in range(5):
        assert await revocations.check(who) is None
    assert redis.reads == 1


async def test_a_change_made_in_one_process_reaches_the_other(
    processes: list[tuple[Revocations, Counted]],
) -> None:
    (here, _), (there, there_redis) = processes
    who = principal()
    assert await there.check(who) is None  # kept by the other process: no mark
    await here.session_ended(who.session_id)
    assert await here.check(who) == "the session has ended; sign in again"  # at once, here

    async def refused() -> str | None:
        return await there.check(who)

    assert await eventually(refused, 5, "the other process refused the ended session")
    # Access changes too: a token issued before the change stops working there.
    other = principal(issued_ms=int(time.time() * 1000) - 1000)
    assert await there.check(other) is None
    reads = there_redis.reads
    await here.access_changed(other.workspace_id, other.user_id)

    async def changed() -> str | None:
        return await there.check(other)

    reason = await eventually(changed, 5, "the other process refused the changed access")
    assert reason == "your access changed since this token was issued; refresh it"
    assert there_redis.reads == reads  # heard, not read


async def test_what_was_kept_is_dropped_when_the_subscription_was_down(
    processes: list[tuple[Revocations, Counted]], redis_url: str
) -> None:
    """A change whose message went nowhere (the subscription was down) is read from Redis."""
    (revocations, _), _ = processes
    who = principal()
    assert await revocations.check(who) is None  # kept: no mark
    admin = aioredis.Redis.from_url(redis_url)
    try:
        # The change is written while no subscription is up to hear it (as if its message
        # were lost with the connection).
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await admin.set(_session_key(who.session_id), 1, ex=60)

        async def refused() -> str | None:
            return await revocations.check(who)

        await eventually(refused, 10, "the ended session refused after resubscribing")

        async def up() -> bool:
            return revocations.listening

        await eventually(up, 10, "the listener back")
        assert await revocations.check(who) == "the session has ended; sign in again"
    finally:
        await admin.aclose()


def logged_out(who: Principal) -> dict[str, Any]:
    """The identity log's record of the session's logout, as of now."""
    return {
        "type": "identity.SessionRevoked",
        "aggregate_id": who.session_id,
        "workspace_id": who.workspace_id,
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "data": {"reason": "logout"},
    }


async def test_a_process_started_after_redis_lost_everything_rebuilds_before_trusting(
    redis_url: str,
) -> None:
    who = principal()
    ended = logged_out(who)
    admin = aioredis.Redis.from_url(redis_url)
    redis = aioredis.Redis.from_url(redis_url)
    revocations = Revocations(redis, 900, lambda: [[ended]])  # type: ignore[list-item]
    try:
        async for key in admin.scan_iter(f"{PREFIX}:*"):
            await admin.delete(key)
        await revocations.start()

        async def up() -> bool:
            return revocations.listening

        await eventually(up, 5, "the change listener subscribed")
        assert await revocations.check(who) == "the session has ended; sign in again"
        assert await admin.get(_session_key(who.session_id)) is not None  # written back
    finally:
        await revocations.close()
        await redis.aclose()
        await admin.aclose()


async def test_a_revocation_whose_mark_was_never_set_is_restored_when_an_api_starts(
    redis_url: str,
) -> None:
    """An api process killed between committing a logout and setting its mark (Redis built
    and intact otherwise): the next api process to start sets it from the identity log."""
    who = principal()
    ended = logged_out(who)
    redis = aioredis.Redis.from_url(redis_url)
    before = Revocations(redis, 900, lambda: [])
    after = Revocations(redis, 900, lambda: [[ended]])  # type: ignore[list-item]
    try:
        await before.rebuild()  # this server is built: nothing would rebuild it again
        assert await before.check(who) is None  # the mark is missing
        await after.top_up()
        assert await after.check(who) == "the session has ended; sign in again"
        assert await before.check(who) == "the session has ended; sign in again"
    finally:
        await redis.aclose()


async def test_kept_marks_are_trusted_only_while_the_subscription_answers(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pings keep a quiet subscription trusted; one that stopped answering (a connection
    that died without a reset) is not, and checks read Redis again."""
    monkeypatch.setattr(revocation, "PING_EVERY_S", 0.1)
    monkeypatch.setattr(revocation, "LIVE_WITHIN_S", 0.5)
    redis = Counted(redis_url)
    revocations = Revocations(redis.client, 900, lambda: [])
    await revocations.rebuild()
    await revocations.start()
    try:

        async def up() -> bool:
            return revocations.listening

        await eventually(up, 5, "the change listener subscribed")
        who = principal()
        assert await revocations.check(who) is None
        reads = redis.reads
        # Three times the trust window without a change: the pings' answers keep it.
        since = time.monotonic()

        async def kept_alive() -> bool:
            return revocations._heard_at > since + 3 * revocation.LIVE_WITHIN_S

        await eventually(kept_alive, 5, "pings answered past three trust windows")
        assert revocations.listening
        assert await revocations.check(who) is None
        assert redis.reads == reads
        revocations._heard_at = 0.0  # nothing heard for long: as if the connection hung
        assert not revocations.listening
        assert await revocations.check(who) is None
        assert redis.reads == reads + 1
    finally:
        await revocations.close()
        await redis.client.aclose()
