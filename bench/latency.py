"""Edit → other client's subscription latency with 50 concurrent editors on the whole stack."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import httpx
import websockets

from bench.harness import percentile, platform, services, settings_for

WORKSPACE = {"x-autoops-workspace": "bench", "x-autoops-actor": "bench"}
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"
SUBSCRIBE = """subscription($id: ID!) { workflowEvents(workflowId: $id, afterVersion: 0)
  { version type payload } }"""


async def gql(
    http: httpx.AsyncClient, query: str, variables: dict[str, object]
) -> dict[str, object]:
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=WORKSPACE
    )
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return dict(body["data"])


async def measure(url: str, editors: int, seconds: float, rate_per_editor: float) -> list[float]:
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=editors + 5)
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
                {"i": {"workflowId": wid, "type": "a.b", "nodeId": f"n{i}"}},
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
        sent: dict[float, float] = {}
        latencies: list[float] = []
        seq = itertools.count(1)
        stop = time.monotonic() + seconds

        async with websockets.connect(
            url.replace("http", "ws") + "/graphql",
            subprotocols=["graphql-transport-ws"],
            max_queue=None,
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"workspaceId": "bench", "actorId": "watcher"},
                    }
                )
            )
            await ws.recv()
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIBE, "variables": {"id": wid}},
                    }
                )
            )

            async def watch() -> None:
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "error" or message.get("payload", {}).get("errors"):
                        raise RuntimeError(f"subscription failed: {message}")
                    if message.get("type") != "next":
                        continue
                    event = message["payload"]["data"]["workflowEvents"]
                    if event["type"] == "NodeMoved":
                        t0 = sent.pop(event["payload"]["x"], None)
                        if t0 is not None:
                            latencies.append(time.perf_counter() - t0)

            async def edit(node: str) -> None:
                await asyncio.sleep(random.random() / rate_per_editor)
                while time.monotonic() < stop:
                    x = float(next(seq))
                    sent[x] = time.perf_counter()
                    await gql(
                        http, MOVE, {"i": {"workflowId": wid, "nodeId": node, "x": x, "y": 0}}
                    )
                    await asyncio.sleep(random.expovariate(rate_per_editor))

            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(edit(n) for n in nodes))
            deadline = time.monotonic() + 5
            while sent and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            watcher.cancel()
            lost = len(sent)
        if lost:
            raise RuntimeError(f"{lost} edits never reached the subscriber")
        return latencies


def run(editors: int = 50, seconds: float = 15.0, rate_per_editor: float = 2.0) -> str:
    with services() as svc:
        settings = settings_for(svc)
        with platform(settings):
            url = f"http://127.0.0.1:{settings.api_port}"
            latencies = asyncio.run(measure(url, editors, seconds, rate_per_editor))
    ms = [x * 1000 for x in latencies]
    return (
        f"latency: edit -> other client's subscription with {editors} editors "
        f"({len(ms) / seconds:.0f} edits/s): p50 {percentile(ms, 50):.1f} ms, "
        f"p99 {percentile(ms, 99):.1f} ms, n={len(ms)}"
    )


if __name__ == "__main__":
    print(run())
