"""Live subscriptions' access re-checks share Redis reads, and one that is cancelled (its
subscription ended in the same turn of the event loop) never stalls the others."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from web.auth.revocation import BUILT, Revocations
from web.auth.tokens import Principal


class FakeRedis:
    """The two calls a check makes, counted."""

    def __init__(self) -> None:
        self.mgets: list[list[str]] = []
        self.values: dict[str, Any] = {BUILT: "run-1"}

    async def mget(self, keys: list[str]) -> list[Any]:
        self.mgets.append(keys)
        await asyncio.sleep(0)  # a read suspends its caller, as a network round trip does
        return [self.values.get(k) for k in keys]

    async def info(self, section: str) -> dict[str, str]:
        return {"run_id": "run-1"}


def principal(user: str) -> Principal:
    return Principal(user, "ws", "EDITOR", f"s-{user}", int(time.time() * 1000), time.time() + 60)


def revocations(redis: FakeRedis) -> Revocations:
    return Revocations(redis, 900, lambda: [])  # type: ignore[arg-type]


async def test_checks_of_one_turn_share_one_read_of_their_distinct_keys() -> None:
    redis = FakeRedis()
    revoked = revocations(redis)
    redis.values["autoops:auth:session:s-u2"] = 1
    reasons = await asyncio.gather(
        *(revoked.check(principal(f"u{i % 3}"), batched=True) for i in range(30))
    )
    assert len(redis.mgets) == 1
    assert len(redis.mgets[0]) == 1 + 3 * 3  # the marker, then session, member, user of 3
    assert reasons.count(None) == 20 and reasons.count("the session has ended; sign in again") == 10


async def test_a_check_cancelled_in_its_own_turn_does_not_stall_later_ones() -> None:
    redis = FakeRedis()
    revoked = revocations(redis)
    lone = asyncio.create_task(revoked.check(principal("u1"), batched=True))

    async def cancel() -> None:
        lone.cancel()

    await asyncio.gather(asyncio.create_task(cancel()), return_exceptions=True)
    await asyncio.gather(lone, return_exceptions=True)
    for _ in range(3):
        assert await asyncio.wait_for(revoked.check(principal("u2"), batched=True), 2) is None


async def test_a_failed_read_fails_every_check_that_shared_it_and_the_next_reads_again() -> None:
    redis = FakeRedis()
    revoked = revocations(redis)
    real = redis.mget

    async def broken(keys: list[str]) -> list[Any]:
        raise ConnectionError("redis is gone")

    redis.mget = broken  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(revoked.check(principal("u"), batched=True) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    redis.mget = real  # type: ignore[method-assign]
    assert await revoked.check(principal("u"), batched=True) is None
