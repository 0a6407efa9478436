"""Relay + projection lag: committed event → read-model change notice, at a sustained rate."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future

import redis

from bench.harness import percentile, platform, services, settings_for
from command_side.bus import CommandBus
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from infra.settings import eventsourcing_env_for

META = c.Meta(actor_id="bench", workspace_id="bench-lag")


def run(rate: float = 500.0, seconds: float = 15.0) -> str:
    with services() as svc:
        settings = settings_for(svc)
        store = WorkflowStore(env=eventsourcing_env_for(svc.database_url))
        bus = CommandBus(store)
        bus.start()
        with platform(settings, ("relay", "projector")):
            wids = [
                bus.execute(c.CreateWorkflow(name=f"w{i}"), META).workflow_id for i in range(20)
            ]
            client = redis.Redis.from_url(svc.redis_url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe("autoops:bench-lag:workflow:*")
            committed: dict[tuple[str, int], float] = {}
            lags: list[float] = []
            # Warm up: the projector's first assignment takes a consumer-group join.
            warm = bus.execute(c.RenameWorkflow(workflow_id=wids[0], name="warm"), META)
            while True:
                message = pubsub.get_message(timeout=30)
                if message and json.loads(message["data"])["version"] >= warm.version:
                    break

            def listen() -> None:
                while not done.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if not message:
                        continue
                    now = time.perf_counter()
                    notice = json.loads(message["data"])
                    for v in range(notice["version"], 0, -1):
                        t0 = committed.pop((notice["id"], v), None)
                        if t0 is None:
                            break
                        lags.append(now - t0)

            done = threading.Event()
            listener = threading.Thread(target=listen)
            listener.start()
            interval = 1 / rate
            start = time.perf_counter()
            n = 0

            def on_commit(future: Future[c.CommandResult]) -> None:
                result = future.result()
                committed[(str(result.workflow_id), result.version)] = time.perf_counter()

            while time.perf_counter() - start < seconds:
                wid = wids[n % len(wids)]
                bus.submit(c.RenameWorkflow(workflow_id=wid, name=f"n{n}"), META).add_done_callback(
                    on_commit
                )
                n += 1
                sleep = start + n * interval - time.perf_counter()
                if sleep > 0:
                    time.sleep(sleep)
            achieved = n / (time.perf_counter() - start)
            deadline = time.monotonic() + 10
            while committed and time.monotonic() < deadline:
                time.sleep(0.05)
            done.set()
            listener.join()
            lost = len(committed)
        bus.stop()
        store.close()
    ms = [x * 1000 for x in lags]
    return (
        f"lag: commit -> read model + notice at {achieved:.0f} events/s: "
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"n={len(ms)}, unseen={lost}"
    )


if __name__ == "__main__":
    print(run())
