"""The api process's adapters, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from command_side.bus import CommandBus
from command_side.store import WorkflowStore
from infra.settings import Settings, eventsourcing_env_for
from projections.applier import ensure_read_models
from query_side import views
from web.hub import Hub


@dataclass
class Services:
    settings: Settings
    bus: CommandBus
    store: WorkflowStore
    pool: AsyncConnectionPool[Any]
    redis: aioredis.Redis
    hub: Hub

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        if not (settings.database_url and settings.redis_url):
            from infra.errors import ConfigError

            raise ConfigError("the api needs AUTOOPS_DATABASE_URL and AUTOOPS_REDIS_URL")
        # Queries must never meet a missing table, even before the projector's first batch.
        await ensure_read_models(settings.database_url)
        store = await asyncio.to_thread(
            WorkflowStore, env=eventsourcing_env_for(settings.database_url)
        )
        bus = CommandBus(store, batch_size=settings.command_batch_size)
        bus.start()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            settings.database_url,
            min_size=2,
            max_size=16,
            open=False,
            kwargs={"autocommit": True},
        )
        await pool.open(wait=True, timeout=30)
        redis = aioredis.from_url(settings.redis_url)

        async def fetch(workspace_id: str, workflow_id: UUID, after: int) -> list[dict[str, Any]]:
            async with pool.connection() as conn:
                return await views.events_after(conn, workspace_id, workflow_id, after)

        async def version(workspace_id: str, workflow_id: UUID) -> int | None:
            async with pool.connection() as conn:
                return await views.workflow_version(conn, workspace_id, workflow_id)

        hub = Hub(redis, fetch, version)
        await hub.start()
        return cls(settings, bus, store, pool, redis, hub)

    async def close(self) -> None:
        await self.hub.close()
        await asyncio.to_thread(self.bus.stop)
        await self.pool.close()
        await self.redis.aclose()
        await asyncio.to_thread(self.store.close)
