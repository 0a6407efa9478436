"""The benchmarks' GraphQL subscribers: `graphql-transport-ws` over picows.

The subscribers share the two cores with what they measure, so their cost is part of every
latency they report. picows parses frames in compiled code and calls back per frame with no
task or queue in between: against `bench.fanout_floor`'s bare server, 550 subscribers at 20
events/s cost their processes about half the CPU of the `websockets` asyncio client
(bench/RESULTS.md, session 10). It is still a real websocket client of the api: the upgrade,
the subprotocol, masking, pings, and the protocol's own messages (`connection_init`,
`connection_ack`, `subscribe`, `next`, `ping`/`pong`, `error`, `complete`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import picows

PROTOCOL = "graphql-transport-ws"

#: Called with the `payload` of each `next` message and the `time.time()` it arrived at (a
#: `next` carrying errors ends the subscription as a failure instead).
OnNext = Callable[[dict[str, Any], float], None]


class SubscriptionEnded(RuntimeError):
    """The server ended the subscription (`error`, `complete`) or the connection."""


class Subscriber(picows.WSListener):
    """One connection with one subscription (id "1")."""

    def __init__(self, token: str, query: str, variables: dict[str, Any], on_next: OnNext):
        self._init = json.dumps({"type": "connection_init",
                                 "payload": {"Authorization": f"Bearer {token}"}})  # fmt: skip
        self._subscribe = json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
        self._on_next = on_next
        self._transport: Any = None
        self.ready = asyncio.Event()  # acknowledged and subscribed
        self.closed = asyncio.Event()
        self.failure: str | None = None  # why it ended, when the server ended it
        self._leaving = False

    def on_ws_connected(self, transport: Any) -> None:
        self._transport = transport
        transport.send(picows.WSMsgType.TEXT, self._init.encode())

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == picows.WSMsgType.CLOSE:
            if not self._leaving:
                self._fail(f"closed by the server: {frame.get_close_code()}")
            transport.disconnect()
            return
        if frame.msg_type != picows.WSMsgType.TEXT or not frame.fin:
            self._fail(f"unexpected frame {frame.msg_type}, fin={frame.fin}")
            return
        arrived = time.time()
        message = json.loads(frame.get_payload_as_bytes())
        kind = message.get("type")
        if kind == "next" and not message["payload"].get("errors"):
            self._on_next(message["payload"], arrived)
        elif kind == "ping":
            transport.send(picows.WSMsgType.TEXT, b'{"type":"pong"}')
        elif kind == "connection_ack":
            transport.send(picows.WSMsgType.TEXT, self._subscribe.encode())
            self.ready.set()
        elif kind in ("next", "error", "complete"):
            self._fail(f"subscription ended: {message}")

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self._leaving:
            self._fail("disconnected")
        self.closed.set()

    def close(self) -> None:
        """Leave (not a failure)."""
        self._leaving = True
        if self._transport is not None and not self.closed.is_set():
            self._transport.send_close(picows.WSCloseCode.OK)
            self._transport.disconnect()

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        if self._transport is not None:
            self._transport.disconnect()


async def subscribe(
    http_url: str, token: str, query: str, variables: dict[str, Any], on_next: OnNext
) -> Subscriber:
    """Connect to the api's `/graphql` websocket and subscribe; returns once acknowledged."""
    url = http_url.replace("http", "ws", 1) + "/graphql"
    subscriber = Subscriber(token, query, variables, on_next)
    await picows.ws_connect(
        lambda: subscriber,
        url,
        extra_headers={"Sec-WebSocket-Protocol": PROTOCOL},
        max_frame_size=64 * 1024 * 1024,
    )
    waiting = asyncio.ensure_future(subscriber.ready.wait())
    ended = asyncio.ensure_future(subscriber.closed.wait())
    try:
        await asyncio.wait({waiting, ended}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        ended.cancel()
    if not subscriber.ready.is_set():
        raise SubscriptionEnded(subscriber.failure or "no connection_ack within 60 s")
    return subscriber
