"""Throttling on real Redis. Logins: per account and per client address, with a retry time,
counted before the check so concurrent guesses cannot slip past. Request rates (webhooks):
per key and second, exact under concurrency, admitting when Redis is gone."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from web.auth.throttle import LoginLimits, LoginThrottle, RateLimited, RequestRate


async def test_one_address_guessing_many_accounts_is_throttled(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    throttle = LoginThrottle(client, LoginLimits(per_account=3, per_address=5, window_s=60))
    address = f"addr-{uuid.uuid4().hex}"
    try:
        for i in range(5):
            await throttle.reserve(f"victim{i}@example.com", address)  # each a failed guess
        with pytest.raises(RateLimited) as limited:
            await throttle.reserve("someone-new@example.com", address)
        assert 0 < limited.value.retry_after_s <= 60
        await throttle.reserve("someone-new@example.com", "another-address")  # others are fine
    finally:
        await client.aclose()


async def test_concurrent_guesses_cannot_exceed_the_limit(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    throttle = LoginThrottle(client, LoginLimits(per_account=5, per_address=1000, window_s=60))
    account = f"{uuid.uuid4().hex}@example.com"

    async def guess() -> bool:
        try:
            await throttle.reserve(account, f"addr-{uuid.uuid4().hex}")
            return True
        except RateLimited:
            return False

    try:
        allowed = await asyncio.gather(*(guess() for _ in range(30)))
        assert sum(allowed) == 5
    finally:
        await client.aclose()


async def test_success_forgets_the_account_failures(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    throttle = LoginThrottle(client, LoginLimits(per_account=2, per_address=100, window_s=60))
    account = f"{uuid.uuid4().hex}@example.com"
    try:
        await throttle.reserve(account, "a1")  # failed
        await throttle.reserve(account, "a1")
        await throttle.succeeded(account, "a1")
        await throttle.reserve(account, "a1")  # failed
        await throttle.reserve(account, "a1")  # failed: two since the success
        with pytest.raises(RateLimited):
            await throttle.reserve(account, "a2")
    finally:
        await client.aclose()


async def test_a_request_rate_admits_exactly_its_limit_per_key_and_second(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    now = [1_000_000.0 + uuid.uuid4().int % 1_000_000]
    rate = RequestRate(client, 5, "deliveries", clock=lambda: now[0])
    key = f"hooks-{uuid.uuid4().hex}"

    async def deliver(k: str) -> bool:
        try:
            await rate.admit(k)
            return True
        except RateLimited as limited:
            assert limited.retry_after_s == 1
            assert "more than 5 deliveries per second" in str(limited)
            return False

    try:
        admitted = await asyncio.gather(*(deliver(key) for _ in range(20)))
        assert sum(admitted) == 5
        assert await deliver(f"{key}-other")  # another workspace has its own count
        now[0] += 1  # the next second starts afresh
        assert sum(await asyncio.gather(*(deliver(key) for _ in range(7)))) == 5
    finally:
        await client.aclose()


async def test_a_request_rate_admits_when_redis_is_unreachable() -> None:
    gone = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        await RequestRate(gone, 1, "deliveries").admit("any")
        await RequestRate(gone, 1, "deliveries").admit("any")
    finally:
        await gone.aclose()
