"""Edit → other client's subscription latency with 50 concurrent editors on the whole stack."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import random
import time
from typing import Any

import aiohttp
import uvloop

from bench.harness import (
    CpuMeter,
    database_of,
    host_line,
    per_unit,
    percentile,
    platform,
    services,
    settings_for,
)
from bench.subscriber import subscribe

REGISTER = """mutation($i: RegisterInput!) { register(input: $i) { accessToken } }"""
SIGN_UP = {
    "email": "bench@example.com",
    "password": "violet-Harbour-lantern-42",
    "displayName": "Bench",
    "workspaceName": "Bench",
}
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"
SUBSCRIBE = """subscription($id: ID!) { workflowEvents(workflowId: $id, afterVersion: 0)
  { version type payload } }"""


async def gql(
    http: aiohttp.ClientSession, query: str, variables: dict[str, object]
) -> dict[str, object]:
    async with http.post("/graphql", json={"query": query, "variables": variables}) as response:
        body = await response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return dict(body["data"])


async def measure(
    url: str, editors: int, seconds: float, rate_per_editor: float
) -> tuple[list[float], tuple[float, float]]:
    """Each edit's latency (seconds), and the epoch seconds the edits were made in."""
    # aiohttp, as in the other load generators: the client shares the two cores with what it
    # measures, and httpx spent ~2.6 ms of CPU per request here (aiohttp about half).
    async with aiohttp.ClientSession(
        base_url=url,
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=editors + 5),
    ) as anonymous:
        token = (await gql(anonymous, REGISTER, {"i": SIGN_UP}))["register"]["accessToken"]  # type: ignore[index]
    async with aiohttp.ClientSession(
        base_url=url,
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(limit=editors + 5),
        headers={"authorization": f"Bearer {token}"},
    ) as http:
        created = await gql(
            http, 'mutation { createWorkflow(input: {name: "bench"}) { workflowId } }', {}
        )
        wid = created["createWorkflow"]["workflowId"]  # type: ignore[index]
        nodes = []
        for i in range(editors):
            added = await gql(
                http,
                "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }",
                {"i": {"workflowId": wid, "type": "data.transform", "nodeId": f"n{i}"}},
            )
            nodes.append(added["addNode"]["nodeId"])  # type: ignore[index]
        # The projector may still be joining its consumer group: wait for our own writes.
        while True:
            shown = await gql(
                http,
                "query($id: ID!, $v: Int) { workflow(id: $id, atLeastVersion: $v) { version } }",
                {"id": wid, "v": editors + 1},
            )
            if shown["workflow"]["version"] == editors + 1:  # type: ignore[index]
                break
        # The watcher is another client in another process, as in real use: its receive
        # times are not delayed by the 50 editors' event loop. perf_counter is the system's
        # monotonic clock, comparable across processes.
        ctx = multiprocessing.get_context("spawn")
        ready, stop_watching = ctx.Event(), ctx.Event()
        results: multiprocessing.Queue[dict[float, float]] = ctx.Queue()
        watcher = ctx.Process(target=_watch, args=(url, token, wid, ready, stop_watching, results))
        watcher.start()
        if not await asyncio.to_thread(ready.wait, 30):
            raise RuntimeError("the watcher did not subscribe")
        sent: dict[float, float] = {}
        seq = itertools.count(1)
        stop = time.monotonic() + seconds

        async def edit(node: str) -> None:
            await asyncio.sleep(random.random() / rate_per_editor)
            while time.monotonic() < stop:
                x = float(next(seq))
                sent[x] = time.perf_counter()
                await gql(http, MOVE, {"i": {"workflowId": wid, "nodeId": node, "x": x, "y": 0}})
                await asyncio.sleep(random.expovariate(rate_per_editor))

        began = time.time()
        await asyncio.gather(*(edit(n) for n in nodes))
        window = (began, time.time())
        await asyncio.sleep(2)  # let the last edits arrive
        stop_watching.set()
        arrived = await asyncio.to_thread(results.get, True, 30)
        watcher.join(10)
    lost = [x for x in sent if x not in arrived]
    if lost:
        raise RuntimeError(f"{len(lost)} edits never reached the subscriber")
    return [arrived[x] - t0 for x, t0 in sent.items()], window


def _watch(url: str, token: str, wid: str, ready: Any, stop: Any, results: Any) -> None:
    """Subscribe to the workflow's events and note when each move arrives."""

    async def main() -> dict[float, float]:
        arrived: dict[float, float] = {}

        def on_next(payload: dict[str, Any], _: float) -> None:
            now = time.perf_counter()
            event = payload["data"]["workflowEvents"]
            if event["type"] == "NodeMoved":
                arrived[event["payload"]["x"]] = now

        connection = await subscribe(url, token, SUBSCRIBE, {"id": wid}, on_next)
        ready.set()
        while not stop.is_set() and connection.failure is None:
            await asyncio.sleep(0.2)
        connection.close()
        if connection.failure is not None:
            raise RuntimeError(f"subscription failed: {connection.failure}")
        return arrived

    results.put(uvloop.run(main()))


def run(editors: int = 50, seconds: float = 15.0, rate_per_editor: float = 2.0) -> str:
    with services() as svc:
        settings = settings_for(svc)
        with CpuMeter(database_of(svc)) as cpu, platform(settings):
            url = f"http://127.0.0.1:{settings.api_port}"
            latencies, window = asyncio.run(measure(url, editors, seconds, rate_per_editor))
        usage = cpu.window(*window)
    ms = [x * 1000 for x in latencies]
    return (
        f"latency: edit -> other client's subscription with {editors} editors "
        f"({len(ms) / seconds:.0f} edits/s): p50 {percentile(ms, 50):.1f} ms, "
        f"p99 {percentile(ms, 99):.1f} ms, n={len(ms)}\n  {per_unit(usage, len(ms), 'edit')}"
    )


if __name__ == "__main__":
    print(host_line())
    print(run())
