"""Presence sessions on real Redis: a session stays while its heartbeats arrive, however long
it goes without a cursor move, drops out once they stop, and a move changes only what it
names. Short timeouts keep the waits short."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from tests.waiting import eventually
from web.presence import Presence

WS = "ws1"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def presence(redis: aioredis.Redis) -> AsyncIterator[Presence]:
    made = Presence(redis, timeout_s=0.6, throttle_s=0.05)
    yield made
    await made.close()


async def sessions(presence: Presence, workflow_id: str) -> list[str]:
    return [m["session_id"] for m in await presence.members(WS, workflow_id)]


async def test_a_session_that_only_heartbeats_stays_present(
    presence: Presence, redis: aioredis.Redis
) -> None:
    wid = str(uuid4())
    await presence.join(WS, wid, "s1", "ada", None)
    # Redis keeps a workflow's sessions a while (at least a minute) after the last write; the
    # editor then only reads. Stand in for that minute by cutting what is left of it short.
    await redis.pexpire(f"autoops:{WS}:presence:{wid}", 100)
    # Heartbeats as the subscription sends them, for two timeouts: past the cut expiry, and
    # past the join's own stamp going stale.
    until = time.monotonic() + 2 * presence.timeout_s
    while time.monotonic() < until:
        await presence.touch(WS, wid, "s1")
        assert await sessions(presence, wid) == ["s1"]
        await asyncio.sleep(presence.timeout_s / 3)
    assert await presence.move(WS, wid, "s1", "ada", cursor={"x": 1.0, "y": 1.0})


async def test_a_session_whose_heartbeats_stop_drops_out_after_the_timeout(
    presence: Presence,
) -> None:
    wid = str(uuid4())
    await presence.join(WS, wid, "s1", "ada", None)
    await presence.join(WS, wid, "s2", "bob", None)
    last_beat = time.monotonic()
    await presence.touch(WS, wid, "s1")
    # s1's api process dies; s2 goes on.

    async def s1_gone() -> list[str] | None:
        await presence.touch(WS, wid, "s2")
        left = await sessions(presence, wid)
        return left if "s1" not in left else None

    assert await eventually(s1_gone, 5, "s1 dropped") == ["s2"]
    assert time.monotonic() - last_beat >= presence.timeout_s
    assert not await presence.move(WS, wid, "s1", "ada", cursor={"x": 1.0, "y": 1.0})


async def test_a_move_changes_only_what_it_names(presence: Presence) -> None:
    wid = str(uuid4())
    await presence.join(WS, wid, "s1", "ada", "a")

    async def ada() -> dict[str, Any]:
        [member] = await presence.members(WS, wid)
        return {"node": member["node_id"], "cursor": member["cursor"]}

    assert await presence.move(WS, wid, "s1", "ada", cursor={"x": 1.0, "y": 2.0})
    assert await ada() == {"node": "a", "cursor": {"x": 1.0, "y": 2.0}}
    assert await presence.move(WS, wid, "s1", "ada", node="b")
    assert await ada() == {"node": "b", "cursor": {"x": 1.0, "y": 2.0}}
    assert await presence.move(WS, wid, "s1", "ada", node=None)
    assert await ada() == {"node": None, "cursor": {"x": 1.0, "y": 2.0}}
    assert await presence.move(WS, wid, "s1", "ada", cursor=None)
    assert await ada() == {"node": None, "cursor": None}
    assert not await presence.move(WS, wid, "s1", "bob", node="a")  # not Bob's session
