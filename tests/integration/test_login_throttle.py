"""Login throttling on real Redis: per account and per client address, with a retry time."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from web.auth.throttle import LoginLimits, LoginThrottle, RateLimited


async def test_one_address_guessing_many_accounts_is_throttled(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    throttle = LoginThrottle(client, LoginLimits(per_account=3, per_address=5, window_s=60))
    address = f"10.0.0.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    try:
        for i in range(5):
            await throttle.check(f"victim{i}@example.com", address)
            await throttle.failed(f"victim{i}@example.com", address)
        with pytest.raises(RateLimited) as limited:
            await throttle.check("someone-new@example.com", address)
        assert 0 < limited.value.retry_after_s <= 60
        await throttle.check("someone-new@example.com", "another-address")  # others are fine
    finally:
        await client.aclose()


async def test_success_clears_the_account_counter(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    throttle = LoginThrottle(client, LoginLimits(per_account=2, per_address=100, window_s=60))
    account = f"{uuid.uuid4().hex}@example.com"
    try:
        await throttle.failed(account, "a1")
        await throttle.succeeded(account)
        await throttle.failed(account, "a1")
        await throttle.check(account, "a1")  # one failure since the success: not throttled
        await throttle.failed(account, "a1")
        with pytest.raises(RateLimited):
            await throttle.check(account, "a2")
    finally:
        await client.aclose()
