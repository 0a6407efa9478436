"""Throttling in Redis: of credential checks (sign-in, and the password or code checks of a
signed-in user), per account and per client address, within a window; and of webhook
deliveries, per workspace and second.

An attempt is counted *before* the credentials are checked, so concurrent guesses cannot
slip past the limit; an attempt that succeeds is taken back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

PREFIX = "autoops:throttle:login"
RATE_PREFIX = "autoops:throttle:rate"


class RateLimited(Exception):
    def __init__(self, retry_after_s: int, what: str = "too many failed attempts") -> None:
        super().__init__(f"{what}; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class RequestRate:
    """At most `per_second` requests per key in each second (one counter per key and second,
    shared by every api process). When Redis cannot be reached the request is admitted: the
    limit protects the platform, and losing deliveries would hurt more."""

    def __init__(
        self,
        redis: aioredis.Redis,
        per_second: int,
        what: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._per_second = per_second
        self._what = what
        self._clock = clock

    async def admit(self, key: str) -> None:
        """Count one request; RateLimited when the key is over its rate this second."""
        second = int(self._clock())
        counter = f"{RATE_PREFIX}:{key}:{second}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                pipe.expire(counter, 2)
                count, _ = await pipe.execute()
        except (aioredis.RedisError, OSError) as exc:
            log.warning("rate limit of %s not checked: %s", key, exc)
            return
        if count > self._per_second:
            raise RateLimited(1, f"more than {self._per_second} {self._what} per second")


@dataclass(frozen=True)
class LoginLimits:
    per_account: int
    per_address: int
    window_s: int


class LoginThrottle:
    def __init__(self, redis: aioredis.Redis, limits: LoginLimits) -> None:
        self._redis = redis
        self._limits = limits

    def _keys(self, account: str, address: str) -> tuple[str, str]:
        return f"{PREFIX}:account:{account}", f"{PREFIX}:address:{address}"

    async def reserve(self, account: str, address: str) -> None:
        """Count an attempt; RateLimited (and nothing counted) past either limit."""
        account_key, address_key = self._keys(account, address)
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in (account_key, address_key):
                # The window starts at the first attempt (INCR keeps the expiry; this works
                # on Redis 6, which has no EXPIRE NX).
                pipe.set(key, 0, ex=self._limits.window_s, nx=True)
                pipe.incr(key)
                pipe.ttl(key)
            _, by_account, account_ttl, _, by_address, address_ttl = await pipe.execute()
        waits = []
        if by_account > self._limits.per_account:
            waits.append(account_ttl)
        if by_address > self._limits.per_address:
            waits.append(address_ttl)
        if waits:
            await self.release(account, address)
            raise RateLimited(max(1, *waits))

    async def release(self, account: str, address: str) -> None:
        """Take back an attempt that was not a failed guess."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._keys(account, address):
                pipe.decr(key)
            await pipe.execute()

    async def succeeded(self, account: str, address: str) -> None:
        """The account proved itself: its failures are forgotten, the attempt taken back."""
        account_key, address_key = self._keys(account, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(account_key)
            pipe.decr(address_key)
            await pipe.execute()
