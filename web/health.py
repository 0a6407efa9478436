"""Readiness: every component the platform needs, each named when it is not up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from web.services import Services

PROCESSES = ("relay", "projector")


async def _postgres(svc: Services) -> str:
    async with svc.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return "up"


async def _redis(svc: Services) -> str:
    await svc.redis.ping()
    return "up"


async def _guard(coro: Any, timeout: float = 2.0) -> str:
    try:
        return str(await asyncio.wait_for(coro, timeout))
    except Exception as exc:  # every failure is reported, none raised
        return f"down: {type(exc).__name__}: {exc}"


async def _processes(svc: Services) -> dict[str, str]:
    """Relay and projector report through Redis heartbeats; Kafka through the relay's."""
    raw = await svc.redis.mget([f"autoops:heartbeat:{p}" for p in PROCESSES])
    beats = {p: json.loads(b) if b else None for p, b in zip(PROCESSES, raw, strict=True)}
    out = {p: "up" if beat else "down: no heartbeat" for p, beat in beats.items()}
    relay = beats["relay"]
    out["kafka"] = (
        "down: unknown (no relay)"
        if relay is None
        else ("up" if relay.get("kafka") == "up" else f"down: {relay.get('kafka')}")
    )
    return out


async def _workers(svc: Services) -> dict[str, Any]:
    """Orchestrators, the cron scheduler and runners, for operators: they do not decide the
    api's readiness (it serves reads and takes commands without them; executions, fires and
    lock expiries wait in the log)."""
    orchestrator = await svc.redis.get("autoops:heartbeat:orchestrator")
    scheduler = await svc.redis.get("autoops:heartbeat:scheduler")
    runners: dict[str, int] = {}
    async for key in svc.redis.scan_iter(match="autoops:heartbeat:runner:*", count=200):
        pool = (key.decode() if isinstance(key, bytes) else str(key)).split(":")[3]
        runners[pool] = runners.get(pool, 0) + 1
    return {
        "orchestrator": "up" if orchestrator else "down: no heartbeat",
        "scheduler": "up" if scheduler else "down: no heartbeat",
        "runners": runners,
    }


async def readiness(svc: Services) -> dict[str, Any]:
    postgres, redis = await asyncio.gather(_guard(_postgres(svc)), _guard(_redis(svc)))
    components = {"postgres": postgres, "redis": redis}
    if redis == "up":
        try:
            components.update(await asyncio.wait_for(_processes(svc), 2.0))
        except Exception as exc:  # reported like the rest
            components.update({p: f"down: {exc}" for p in (*PROCESSES, "kafka")})
    else:
        components.update({p: "down: unknown (no redis)" for p in (*PROCESSES, "kafka")})
    down = sorted(name for name, state in components.items() if state != "up")
    report: dict[str, Any] = {
        "status": "ready" if not down else "not ready",
        "down": down,
        "components": components,
    }
    if redis == "up":
        try:
            report["workers"] = await asyncio.wait_for(_workers(svc), 2.0)
        except Exception as exc:  # informational: never fails readiness
            report["workers"] = {"error": str(exc)}
    return report
