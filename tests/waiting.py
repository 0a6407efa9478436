"""Waiting for a condition another process brings about (there is no event to await across
processes, so the condition is polled until it holds or the deadline passes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """The first truthy result of `check`; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        time.sleep(every)


def http_answer(method: str, url: str, **kwargs: object) -> httpx.Response | None:
    """The response, or None while nothing listens yet."""
    try:
        return httpx.request(method, url, timeout=2, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float, what: str, every: float = 0.05
) -> T:
    """`wait_until` for async checks (e.g. a GraphQL read of a read model still catching up)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(every)
