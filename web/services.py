"""The api process's adapters, built once at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from command_side.bus import CommandBus
from command_side.contracts.log import EventLog
from command_side.execution.service import ExecutionService
from command_side.execution.starter import ExecutionStarter
from command_side.execution.store import ExecutionStore
from command_side.identity import IdentityService, IdentityStore
from command_side.store import WorkflowStore
from infra.keys import credentials_keys, signing_keys
from infra.settings import Settings, eventsourcing_env_for
from projections.applier import ensure_read_models
from projections.schema import READER_ROLE
from query_side import execution_views, views
from web.auth import LoginLimits, LoginThrottle, RequestRate, Revocations, Tokens
from web.graphql.fanout import Renderings
from web.hub import Hub
from web.presence import Presence
from web.tail import EventTail


@dataclass
class Services:
    settings: Settings
    bus: CommandBus
    store: WorkflowStore
    pool: AsyncConnectionPool[Any]
    redis: aioredis.Redis
    hub: Hub
    tail: EventTail
    identity: IdentityService
    tokens: Tokens
    revocations: Revocations
    throttle: LoginThrottle
    execution_store: ExecutionStore
    #: Executions' events for `executionUpdates`, straight from their store.
    execution_tail: EventTail
    #: Starts executions, many per append transaction.
    starter: ExecutionStarter
    #: Webhook deliveries per workspace and second.
    webhook_rate: RequestRate
    #: Who has which workflow open (Redis, across api processes).
    presence: Presence
    #: Subscription events rendered once per process and selection (shared delivery).
    renderings: Renderings = field(default_factory=Renderings)

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        if not (settings.database_url and settings.redis_url):
            from infra.errors import ConfigError

            raise ConfigError("the api needs AUTOOPS_DATABASE_URL and AUTOOPS_REDIS_URL")
        # Credentials are encrypted here: a missing or bad key stops the start, not a request.
        credentials_keys(settings)
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
            configure=_as_reader,
        )
        await pool.open(wait=True, timeout=30)
        # Waits for a free connection rather than failing: a burst of websocket connects (each
        # checks its token's revocation) must queue, not answer INTERNAL.
        redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, max_connections=settings.redis_max_connections, timeout=10
            )
        )

        read_version = {
            "workflow": views.workflow_version,
            "execution": execution_views.execution_version,
        }

        async def version(context: str, workspace_id: str, aggregate_id: UUID) -> int | None:
            async with scoped(pool, workspace_id) as conn:
                return await read_version[context](conn, workspace_id, aggregate_id)

        hub = Hub(redis, version)
        await hub.start()
        tail = EventTail(store, settings.database_url, settings.relay_poll_interval_s)
        await tail.start()
        es_env = eventsourcing_env_for(settings.database_url)
        # Used in bursts (the tail's reads, execution commands): one standing connection, more
        # under load (each standing one counts against max_connections in every api process).
        execution_store = await asyncio.to_thread(
            ExecutionStore, env={**es_env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "7"}
        )
        execution_tail = EventTail(
            execution_store,
            settings.database_url,
            settings.relay_poll_interval_s,
            context="execution",
        )
        await execution_tail.start()
        identity_store = await asyncio.to_thread(IdentityStore, env=es_env)
        identity = await asyncio.to_thread(
            IdentityService,
            identity_store,
            bcrypt_cost=settings.bcrypt_cost,
            refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        tokens = Tokens(
            signing_keys(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_s=settings.access_token_ttl_s,
        )

        def read_identity_log() -> Iterator[list[dict[str, Any]]]:
            """The identity events of the last token lifetime (a minute's margin), in batches
            as they are read: what revocation marks are rebuilt from."""
            log = EventLog(es_env, "identity")
            try:
                since = time.time() - settings.access_token_ttl_s - 60
                yield from log.read(after=log.position_before(since))
            finally:
                log.close()

        revocations = Revocations(redis, settings.access_token_ttl_s, read_identity_log)
        await revocations.start()
        await revocations.top_up()
        throttle = LoginThrottle(
            redis,
            LoginLimits(
                per_account=settings.login_max_failures_per_account,
                per_address=settings.login_max_failures_per_address,
                window_s=settings.login_window_s,
            ),
        )
        return cls(
            settings,
            bus,
            store,
            pool,
            redis,
            hub,
            tail,
            identity,
            tokens,
            revocations,
            throttle,
            execution_store,
            execution_tail,
            ExecutionStarter(ExecutionService(execution_store, store)),
            RequestRate(redis, settings.webhook_rate_per_s, "webhook deliveries"),
            Presence(redis, settings.presence_timeout_s, settings.presence_throttle_ms / 1000),
        )

    def reader(self, who: Any) -> Any:
        """A read-only connection that row-level security limits to the caller's workspace
        (and their own user row)."""
        return scoped(self.pool, who.workspace_id, who.actor_id)

    async def close(self) -> None:
        await self.presence.close()
        await self.revocations.close()
        await self.hub.close()
        await self.tail.close()
        await self.execution_tail.close()
        await asyncio.to_thread(self.starter.stop)
        await asyncio.to_thread(self.bus.stop)
        await self.pool.close()
        await self.redis.aclose()
        await asyncio.to_thread(self.store.close)
        await asyncio.to_thread(self.execution_store.close)
        await asyncio.to_thread(self.identity.close)


async def _as_reader(conn: AsyncConnection[Any]) -> None:
    """The api reads as a role without privileges beyond SELECT on `read`, which row-level
    security binds to the workspace each transaction names."""
    await conn.execute(f"SET ROLE {READER_ROLE}")


@asynccontextmanager
async def scoped(
    pool: AsyncConnectionPool[Any], workspace_id: str, user_id: str = ""
) -> AsyncIterator[AsyncConnection[Any]]:
    # Pipeline mode: BEGIN and the settings travel with the first query (two round trips
    # for a one-query read, not four).
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        await conn.execute(
            "SELECT set_config('autoops.workspace_id', %s, true),"
            " set_config('autoops.user_id', %s, true)",
            (workspace_id, user_id),
            prepare=True,
        )
        yield conn
