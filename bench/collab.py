"""Live editing under load: N editors and M watchers on one workflow, all real GraphQL
websocket clients (`graphql-transport-ws`, `bench.subscriber`) of one api process.

Every editor subscribes to `workflowEvents` like every watcher, and moves its own node at a
steady pace over HTTP (`moveNode`; no locks, so no edit is refused). For each edit the time
from sending the mutation to each subscriber receiving its event is recorded; each
subscriber's stream is checked for lost, repeated or reordered versions; any 5xx or
transport error is counted. Editors edit independently (Poisson arrivals), as people do.
Usage: `python -m bench.collab [editors] [watchers] [seconds] [edits/s per editor]` (defaults
50, 500, 15, 2).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass, field
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
from bench.latency import REGISTER, SIGN_UP
from bench.subscriber import subscribe

EVENTS = """subscription($id: ID!, $after: Int) {
  workflowEvents(workflowId: $id, afterVersion: $after) { version } }"""
CREATE = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { workflowId version } }"
ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { version } }"
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"


@dataclass
class Watcher:
    """One subscriber: when it received each version."""

    received: dict[int, float] = field(default_factory=dict)
    order_errors: int = 0
    last: int = 0

    def on_next(self, payload: dict[str, Any], at: float) -> None:
        version = payload["data"]["workflowEvents"]["version"]
        if version != self.last + 1:
            self.order_errors += 1
        self.last = max(self.last, version)
        self.received[version] = at


@dataclass
class Result:
    editors: int
    watchers: int
    edits: int
    seconds: float
    latencies: list[float]
    lost: int
    reordered: int
    server_errors: int
    offered: float
    answered: list[float]
    window: tuple[float, float]  # epoch seconds the edits were made in
    cpu: str = ""

    def line(self) -> str:
        p = self.latencies
        return (
            f"live editing, {self.editors} editors + {self.watchers} watchers: edit → every "
            f"subscriber p50 {percentile(p, 50):.1f} / p99 {percentile(p, 99):.1f} ms over "
            f"{self.edits} edits ({self.edits / self.seconds:.0f}/s, {self.offered:.0f}/s "
            f"offered, {len(p)} deliveries; mutation answered p50 "
            f"{percentile(self.answered, 50):.1f} / p99 {percentile(self.answered, 99):.1f} ms); "
            f"lost {self.lost}, reordered {self.reordered}, 5xx {self.server_errors}"
            + (f"\n  {self.cpu}" if self.cpu else "")
        )


#: Client processes the subscribers are spread over (each real client is a machine of its own;
#: one Python process parsing every subscriber's messages would queue them behind each other).
CLIENT_PROCESSES = 2


def subscriber_process(
    url: str, token: str, wid: str, after: int, count: int, ready: Any, last: Any, out: Any
) -> None:
    """`count` subscribers in one process: reports ready, waits for the last version sent,
    then sends back (received times, order errors, crashed) per subscriber."""

    async def main() -> None:
        subscribers = [Watcher(last=after) for _ in range(count)]
        connections = await asyncio.wait_for(
            asyncio.gather(*(subscribe(url, token, EVENTS, {"id": wid, "after": after},
                                       w.on_next) for w in subscribers)), 120)  # fmt: skip
        ready.set()
        final = await asyncio.to_thread(last.get)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(w.last < final for w in subscribers):
            await asyncio.sleep(0.1)
        crashed = sum(1 for c in connections if c.failure is not None)
        for connection in connections:
            connection.close()
        out.put(([(w.received, w.order_errors) for w in subscribers], crashed))

    uvloop.run(main())


async def run_load(
    url: str, editors: int, watchers: int, seconds: float, rate: float = 2.0
) -> Result:
    async with aiohttp.ClientSession(base_url=url) as http:

        async def gql(query: str, variables: dict[str, Any], token: str = "") -> Any:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            async with http.post("/graphql", json={"query": query, "variables": variables},
                                 headers=headers) as response:  # fmt: skip
                if response.status >= 500:
                    raise RuntimeError(f"5xx: {response.status}")
                body = await response.json()
            if body.get("errors"):
                raise RuntimeError(body["errors"])
            return body["data"]

        token = (await gql(REGISTER, {"i": SIGN_UP}))["register"]["accessToken"]
        created = (await gql(CREATE, {"i": {"name": "Load"}}, token))["createWorkflow"]
        wid = created["workflowId"]
        for i in range(editors):
            node = {"workflowId": wid, "type": "data.transform", "nodeId": f"e{i}"}
            await gql(ADD, {"i": node}, token)
        start_version = created["version"] + editors
        # Every editor subscribes like every watcher: editors + watchers subscriptions.
        mp = multiprocessing.get_context("spawn")
        total = editors + watchers
        shares = [total // CLIENT_PROCESSES + (i < total % CLIENT_PROCESSES)
                  for i in range(CLIENT_PROCESSES)]  # fmt: skip
        clients = []
        for share in shares:
            ready, last, out = mp.Event(), mp.Queue(), mp.Queue()
            args = (url, token, wid, start_version, share, ready, last, out)
            process = mp.Process(target=subscriber_process, args=args, daemon=True)
            process.start()
            clients.append((process, ready, last, out))
        for _, ready, _, _ in clients:
            if not await asyncio.to_thread(ready.wait, 180):
                raise RuntimeError("subscribers did not connect")
        await asyncio.sleep(1.0)  # every subscription registered its watch server-side
        sent: dict[int, float] = {}
        answered: list[float] = []
        server_errors = 0
        stop_at = time.monotonic() + seconds

        def pause() -> float:
            """A Poisson gap, cut short at the end of the run (so the run lasts `seconds`)."""
            return min(random.expovariate(rate), max(0.0, stop_at - time.monotonic()))

        async def edit(i: int) -> None:
            nonlocal server_errors
            n = 0
            await asyncio.sleep(pause())
            while time.monotonic() < stop_at:
                n += 1
                at = time.time()
                try:
                    moved = await gql(MOVE, {"i": {"workflowId": wid, "nodeId": f"e{i}",
                                                   "x": n, "y": i}}, token)  # fmt: skip
                    sent[moved["moveNode"]["version"]] = at
                    answered.append((time.time() - at) * 1000)
                except RuntimeError as exc:
                    server_errors += "5xx" in str(exc)
                await asyncio.sleep(pause())

        began, began_at = time.monotonic(), time.time()
        await asyncio.gather(*(edit(i) for i in range(editors)))
        elapsed = time.monotonic() - began
        window = (began_at, time.time())
        last_version = max(sent) if sent else start_version
        streams: list[tuple[dict[int, float], int]] = []
        crashed = 0
        for _, _, last, _ in clients:
            last.put(last_version)
        for process, _, _, out in clients:
            got, failed = await asyncio.to_thread(out.get, True, 120)
            streams += got
            crashed += failed
            process.join(10)
        latencies = [
            (received[v] - at) * 1000
            for received, _ in streams
            for v, at in sent.items()
            if v in received
        ]
        expected = set(range(start_version + 1, last_version + 1))
        lost = sum(len(expected - set(received)) for received, _ in streams)
        reordered = sum(errors for _, errors in streams)
        return Result(editors, watchers, len(sent), elapsed, latencies, lost, reordered,
                      server_errors + crashed, editors * rate, answered, window)  # fmt: skip


def measure(
    editors: int = 50, watchers: int = 500, seconds: float = 15.0, rate: float = 2.0
) -> Result:
    with services() as svc:
        settings = settings_for(svc)
        with CpuMeter(database_of(svc)) as cpu, platform(settings):
            url = f"http://127.0.0.1:{settings.api_port}"
            result = asyncio.run(run_load(url, editors, watchers, seconds, rate))
        result.cpu = per_unit(cpu.window(*result.window), result.edits, "edit")
        return result


def run() -> str:
    """One line for `make bench`."""
    return measure().line()


def main() -> None:
    args = [float(a) for a in sys.argv[1:]]
    editors, watchers, seconds, rate = (int(args[0]) if args else 50,
                                        int(args[1]) if len(args) > 1 else 500,
                                        args[2] if len(args) > 2 else 15.0,
                                        args[3] if len(args) > 3 else 2.0)  # fmt: skip
    print(host_line())
    print(measure(editors, watchers, seconds, rate).line(), flush=True)


if __name__ == "__main__":
    main()
