"""The api's websocket protocol: uvicorn's sans-I/O one, with the frames a connection is sent
in one turn of the event loop leaving in one write.

Fanning an event out to hundreds of subscribers is bound by the kernel, not by Python: each
`transport.write` is a loopback send and a wake-up of the receiver (40 % of the api's samples
under the live-editing load, `bench/RESULTS.md`). A subscriber that has fallen behind by
several events sends them back to back without yielding (`web.graphql.subscription`), so
queuing its frames and writing them together at the end of the turn turns k sends into one:
the further behind the server is, the more it saves, and a subscriber that is keeping up
waits for nothing but the rest of the current turn.

Order is kept: every other write of the protocol (close, pong, keepalive ping, error
responses) drains the same outgoing buffer, so it goes after what was queued before it.

The protocol also offers the application a synchronous send of one text frame, under
`SEND_TEXT_NOW` in the scope's `extensions`: the shared fan-out (`web.graphql.fanout`) sends
each subscriber's pre-rendered events through it instead of through three layers of awaited
ASGI wrappers per frame. It refuses (returns False) whenever the ordinary `send` would have
to wait or fail, and the caller then takes that path. It frames the text itself (`text_frame`:
0.7 µs against 3.9 µs through the `websockets` protocol object, 550 times per edit under the
live-editing load) and queues the frame where the protocol object queues its own, so order
holds as above; with an extension negotiated (compression), a fragmented message under way or
debug logging on, the protocol object frames it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.protocol import State

#: The scope extension holding the protocol's `send_text_now` (`Callable[[str], bool]`).
SEND_TEXT_NOW = "autoops.websocket.send_text_now"
SendTextNow = Callable[[str], bool]
#: Bytes queued after which they are written at once (asyncio's default high-water mark).
QUEUE_LIMIT = 64 * 1024


def text_frame(data: bytes) -> bytes:
    """One final text frame as a server sends it (RFC 6455 5.2: unmasked, no extension)."""
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + data
    return struct.pack("!BBQ", 0x81, 127, size) + data


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """`websocket.send` messages are framed at once and written at the end of the turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flush_due = False
        self._queued = 0  # bytes of frames queued since the last flush
        app = self.app

        async def app_then_flush(scope: Any, receive: Any, send: Any) -> Any:
            try:
                return await app(scope, receive, send)
            finally:
                # uvicorn closes the transport the moment the app returns or raises: what
                # it queued in its last turn goes first.
                self._flush()

        self.app = app_then_flush

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:
            extensions: dict[str, Any] = self.scope["extensions"]  # type: ignore[assignment]
            extensions[SEND_TEXT_NOW] = self.send_text_now

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.send" or not self._open():
            self._flush()  # what was queued goes first
            await super().send(message)
            return
        await self.writable.wait()  # the transport's buffer is over its high-water mark
        if self.disconnected:
            raise ClientDisconnected()
        data = message.get("bytes")
        text = message.get("text")
        try:
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                data = text.encode()
                self.conn.send_text(data)
        except InvalidState as exc:
            raise ClientDisconnected() from exc
        self._queue(len(data or b""))

    def send_text_now(self, text: str) -> bool:
        """Queue one text frame at once, as `send` would; False (nothing queued) when the
        connection is not open or its write buffer is full: `send` then waits or raises."""
        if not self._open() or not self.writable.is_set():
            return False
        data = text.encode()
        conn = self.conn
        writes = getattr(conn, "writes", None)  # what `data_to_send` drains
        if (
            conn.state is State.OPEN
            and isinstance(writes, list)
            and not (conn.extensions or conn.expect_continuation_frame or conn.debug)
        ):
            writes.append(text_frame(data))
        else:
            try:
                conn.send_text(data)
            except InvalidState:
                return False
        self._queue(len(data))
        return True

    def _open(self) -> bool:
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
        )

    def _queue(self, size: int) -> None:
        """A frame of `size` bytes was queued: written at the end of the turn, or at once
        past the transport's high-water mark, so that a burst (a subscriber catching up on
        a page of events) meets the transport's back-pressure as uvicorn's `send` would:
        `pause_writing` clears `writable`, and later sends wait for it."""
        self._queued += size
        if self._queued >= QUEUE_LIMIT:
            self._flush()
        elif not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self._queued = 0
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))
