"""Change notices on Redis, published after a read-model commit, for GraphQL subscriptions."""

from __future__ import annotations

import json
from collections.abc import Iterable

import redis.asyncio as aioredis

from projections.applier import Change


def aggregate_channel(workspace_id: str, context: str, aggregate_id: str) -> str:
    return f"autoops:{workspace_id}:{context}:{aggregate_id}"


def workspace_channel(workspace_id: str, context: str) -> str:
    return f"autoops:{workspace_id}:{context}s"


async def publish(client: aioredis.Redis, changes: Iterable[Change]) -> None:
    """One notice per changed aggregate and one per workspace, in a single round trip."""
    changes = list(changes)
    if not changes:
        return
    async with client.pipeline(transaction=False) as pipe:
        workspaces: set[tuple[str, str]] = set()
        for ch in changes:
            notice = json.dumps({"id": ch.aggregate_id, "version": ch.version})
            pipe.publish(aggregate_channel(ch.workspace_id, ch.context, ch.aggregate_id), notice)
            workspaces.add((ch.workspace_id, ch.context))
        for workspace_id, context in workspaces:
            pipe.publish(workspace_channel(workspace_id, context), "{}")
        await pipe.execute()
