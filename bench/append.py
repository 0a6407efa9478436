"""Append throughput: the command path (group commit) vs. plain single-event save(), one run."""

from __future__ import annotations

import threading
import time
import uuid

from bench.harness import services
from command_side.bus import CommandBus
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from command_side.workflow.aggregate import Workflow
from infra.settings import eventsourcing_env_for

META = c.Meta(actor_id="bench", workspace_id="bench")


def plain_saves(store: WorkflowStore, seconds: float) -> float:
    """Events/s when each event is its own save() (the library's ordinary use), 8 writers."""
    count = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def writer() -> None:
        nonlocal count
        w = Workflow.create(uuid.uuid4(), "plain", "", META)
        store.save(w)
        while time.perf_counter() < deadline:
            w.add_node("data.transform", "", {}, 0, 0, META)
            store.save(w)
            with lock:
                count += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - started)


def command_path(store: WorkflowStore, seconds: float, writers: int = 64) -> float:
    """Events/s through CommandBus with `writers` concurrent callers on 16 workflows."""
    bus = CommandBus(store)
    bus.start()
    ids = [bus.execute(c.CreateWorkflow(name=f"w{i}"), META).workflow_id for i in range(16)]
    count = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def writer(k: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            bus.execute(c.AddNode(workflow_id=ids[(k + i) % 16], node_type="data.transform"), META)
            i += 1
            with lock:
                count += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = count / (time.perf_counter() - started)
    bus.stop()
    return rate


def run(seconds: float = 5.0) -> str:
    with services() as svc:
        store = WorkflowStore(env=eventsourcing_env_for(svc.database_url))
        plain = plain_saves(store, seconds)
        bus = command_path(store, seconds)
        store.close()
    return (
        f"append: command path {bus:,.0f} events/s vs plain save() {plain:,.0f} events/s "
        f"= {bus / plain:.1f}x"
    )


if __name__ == "__main__":
    print(run())
