"""Replay speed: events/s rebuilding every read model straight from the event store."""

from __future__ import annotations

import asyncio
import uuid

from bench.harness import services
from command_side.store import WorkflowStore
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from infra.settings import eventsourcing_env_for
from projections.replay import rebuild

META = Meta(actor_id="bench", workspace_id="bench")


def seed(store: WorkflowStore, events: int) -> None:
    """Workflows of 100 events each: node adds, moves, connections and config updates."""
    for w in range(events // 100):
        workflow = Workflow.create(uuid.uuid4(), f"w{w}", "", META)
        nodes: list[str] = []
        for i in range(99):
            kind = i % 4
            if kind == 0 or len(nodes) < 2:
                nodes.append(workflow.add_node("http.request", "", {"url": "x"}, i, i, META))
            elif kind == 1:
                workflow.move_node(nodes[-1], 1, 2, META)
            elif kind == 2:
                workflow.connect(nodes[-2], nodes[-1], None, None, META)
            else:
                workflow.update_node(nodes[-1], "n", {"url": "x", "method": "POST"}, META)
        store.save(workflow)


def run(events: int = 50_000) -> str:
    with services() as svc:
        env = eventsourcing_env_for(svc.database_url)
        store = WorkflowStore(env=env)
        seed(store, events)
        store.close()
        summary = asyncio.run(rebuild(svc.database_url, env))
    return f"replay: {summary}"


if __name__ == "__main__":
    print(run())
