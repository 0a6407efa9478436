"""Process heartbeats in Redis, read by the api's readiness check."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any

import redis

KEY = "autoops:heartbeat:{}"
TTL_S = 5


class Heartbeat:
    """Sets `autoops:heartbeat:<name>` (expiring) at most once a second."""

    def __init__(self, redis_url: str, name: str, every_s: float = 1.0) -> None:
        """`every_s`: how often its process beats (the key outlives a few missed beats)."""
        self._client = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self._key = KEY.format(name)
        self._last = 0.0
        self._ttl_s = max(TTL_S, math.ceil(3 * every_s))

    def __call__(self, **state: Any) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        # On failure readiness reports the heartbeat missing; nothing else to do here.
        with contextlib.suppress(redis.RedisError):
            self._client.set(self._key, json.dumps({"pid": os.getpid(), **state}), ex=self._ttl_s)
