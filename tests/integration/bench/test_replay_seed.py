"""The replay benchmark's workload is one the platform accepts (its seed broke once, unnoticed,
when node configs began to be validated): seeded and rebuilt here at a small size."""

from __future__ import annotations

import asyncio

from bench.replay import seed
from command_side.store import WorkflowStore
from infra.settings import eventsourcing_env_for
from projections.replay import rebuild


def test_the_replay_benchmark_seeds_and_rebuilds_every_event(database_url: str) -> None:
    env = eventsourcing_env_for(database_url)
    store = WorkflowStore(env=env)
    try:
        seed(store, 300)
    finally:
        store.close()
    summary = asyncio.run(rebuild(database_url, env))
    assert summary.events == 300  # three workflows of 100 events: created + 99 operations
