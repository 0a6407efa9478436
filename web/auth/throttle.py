"""Login throttling in Redis: failures counted per account and per client address within a
window; past the limit, sign-in is refused with the time to wait."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

PREFIX = "autoops:throttle:login"


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


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
        return f"{PREFIX}:account:{account.strip().lower()}", f"{PREFIX}:address:{address}"

    async def check(self, account: str, address: str) -> None:
        """Raise RateLimited while either counter is at its limit."""
        account_key, address_key = self._keys(account, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in (account_key, address_key):
                pipe.get(key)
                pipe.ttl(key)
            by_account, account_ttl, by_address, address_ttl = await pipe.execute()
        waits = []
        if int(by_account or 0) >= self._limits.per_account:
            waits.append(account_ttl)
        if int(by_address or 0) >= self._limits.per_address:
            waits.append(address_ttl)
        if waits:
            raise RateLimited(max(1, *waits))

    async def failed(self, account: str, address: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in self._keys(account, address):
                # The window starts at the first failure (INCR keeps the expiry; this works on
                # Redis 6, which has no EXPIRE NX).
                pipe.set(key, 0, ex=self._limits.window_s, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, account: str) -> None:
        await self._redis.delete(self._keys(account, "")[0])
