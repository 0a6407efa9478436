"""The floor under live editing: a bare ASGI app on uvicorn (the api's server settings) that
sends one small text frame per event to N websocket clients at a steady rate, and nothing else
(no GraphQL, no database, no other process; it acknowledges `connection_init` and takes the
subscription as given). The clients are `bench.collab`'s (`bench.subscriber`, one JSON parse
per message, in `bench.collab.CLIENT_PROCESSES` processes). What this machine cannot do here,
the platform cannot do either. Usage: `python -m bench.fanout_floor [clients] [events/s] [seconds]`
(defaults 550, 100, 10).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import uvloop

from bench.collab import CLIENT_PROCESSES
from bench.harness import host_line, percentile
from bench.subscriber import subscribe
from infra.embedded import free_port

_clients: set[Any] = set()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /go starts the events; a websocket is a subscriber."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        if scope["path"] == "/go":
            asyncio.get_running_loop().create_task(_emit())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started"})
    else:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
        _clients.add(send)
        try:
            while (message := await receive())["type"] != "websocket.disconnect":
                if "connection_init" in (message.get("text") or ""):
                    await send({"type": "websocket.send", "text": '{"type":"connection_ack"}'})
        finally:
            _clients.discard(send)


async def _emit() -> None:
    rate, seconds = float(os.environ["FLOOR_RATE"]), float(os.environ["FLOOR_SECONDS"])
    start, version = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        version += 1
        event = {"version": version, "sentAt": time.time()}
        text = json.dumps({"id": "1", "type": "next",
                           "payload": {"data": {"workflowEvents": event}}})  # fmt: skip
        for client in list(_clients):
            await client({"type": "websocket.send", "text": text})
        await asyncio.sleep(max(0.0, start + version / rate - time.monotonic()))


def _subscribers(url: str, count: int, seconds: float, ready: Any, out: Any) -> None:
    async def main() -> None:
        latencies: list[float] = []

        def on_next(payload: dict[str, Any], at: float) -> None:
            latencies.append((at - payload["data"]["workflowEvents"]["sentAt"]) * 1000)

        connections = await asyncio.gather(
            *(subscribe(url, "", "subscription { workflowEvents }", {}, on_next)
              for _ in range(count))
        )  # fmt: skip
        ready.set()
        await asyncio.sleep(seconds + 5)
        for connection in connections:
            connection.close()
        out.put(latencies)

    uvloop.run(main())


def measure(clients: int = 550, rate: float = 100.0, seconds: float = 10.0) -> str:
    port = free_port()
    env = {**os.environ, "FLOOR_RATE": str(rate), "FLOOR_SECONDS": str(seconds)}
    command = [sys.executable, "-m", "uvicorn", "bench.fanout_floor:app", "--port", str(port)]
    # The api's server settings (infra/bootstrap.py run_api).
    command += ["--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    server = subprocess.Popen([*command, "--log-level", "warning"], env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.head(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        mp = multiprocessing.get_context("spawn")
        shares = [clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES)
                  for i in range(CLIENT_PROCESSES)]  # fmt: skip
        processes = []
        for share in shares:
            ready, out = mp.Event(), mp.Queue()
            args = (f"http://127.0.0.1:{port}", share, seconds, ready, out)
            process = mp.Process(target=_subscribers, args=args, daemon=True)
            process.start()
            processes.append((process, ready, out))
        for _, ready, _ in processes:
            ready.wait(120)
        httpx.get(f"http://127.0.0.1:{port}/go", timeout=10)
        latencies: list[float] = []
        for process, _, out in processes:
            latencies += out.get(timeout=seconds + 60)
            process.join(10)
    finally:
        server.terminate()
        server.wait(10)
    expected = clients * int(rate * seconds)
    return (
        f"bare fan-out floor, {clients} clients, {rate:.0f} events/s: send → client p50 "
        f"{percentile(latencies, 50):.1f} / p99 {percentile(latencies, 99):.1f} ms over "
        f"{len(latencies)} deliveries ({len(latencies) / seconds:.0f}/s; {expected} sent)"
    )


def run() -> str:
    """One line for `make bench`, beside `bench.collab`'s at the same load."""
    return measure()


def main() -> None:
    args = [float(a) for a in sys.argv[1:]]
    clients = int(args[0]) if args else 550
    rate = args[1] if len(args) > 1 else 100.0
    seconds = args[2] if len(args) > 2 else 10.0
    print(host_line())
    print(measure(clients, rate, seconds), flush=True)


if __name__ == "__main__":
    main()
