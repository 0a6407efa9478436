"""The api's websocket protocol on a real uvicorn server and a real client: frames sent in one
turn of the event loop leave in one write, in order, and a close or an error response still
comes after everything sent before it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.embedded import free_port
from tests.waiting import eventually
from web.websocket import QUEUE_LIMIT, SEND_TEXT_NOW, CoalescingWebSocketProtocol


class Counting(CoalescingWebSocketProtocol):
    """Records every write to the socket (handshake response, frames, close)."""

    writes: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        write = transport.write

        def recorded(data: bytes) -> None:
            Counting.writes.append(bytes(data))
            write(data)

        transport.write = recorded


def frames_per_write() -> list[int]:
    """How many `frame …` texts each write carried, writes without any left out."""
    return [n for w in Counting.writes if (n := w.count(b"frame "))]


#: Frame lengths around each of the three length encodings (7 bits, 16 bits, 64 bits).
SIZES = (0, 1, 125, 126, 127, 65_535, 65_536, 200_001)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/burst/N`: N frames in one turn, then a close with code 4000. `/now/N`: the same,
    every other frame through the synchronous `SEND_TEXT_NOW`. `/turns/N`: N frames, one per
    turn, then an echo of each message received. `/big/N`: N frames of 10 KiB in one turn.
    `/gone/N`: N frames in one turn, and the app returns without a close. `/sizes/0`: frames
    of every length class (`SIZES`) through `SEND_TEXT_NOW`, then a close. `/refused`: an
    HTTP 403."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()  # websocket.connect
    kind, _, count = scope["path"].strip("/").partition("/")
    if kind == "refused":
        await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})
        return
    await send({"type": "websocket.accept"})
    send_now = scope["extensions"][SEND_TEXT_NOW]
    if kind == "sizes":
        for size in SIZES:
            text = "é" * (size // 2) + "x" * (size % 2)  # two bytes per é
            if not send_now(text):  # the socket's buffer is full: the ordinary send waits
                await send({"type": "websocket.send", "text": text})
            await asyncio.sleep(0)  # one frame per turn: written before the next is framed
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        return
    for i in range(0 if kind == "big" else int(count)):
        if kind == "now" and i % 2:  # every other frame without awaiting anything
            assert send_now(f"frame {i}")
        else:
            await send({"type": "websocket.send", "text": f"frame {i}"})
        if kind == "turns":
            await asyncio.sleep(0)
    if kind == "now":
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        assert not send_now("after the close")  # refused: nothing is queued
        return
    if kind == "big":  # 100 frames of 10 KiB in one turn
        for i in range(int(count)):
            await send({"type": "websocket.send", "text": f"frame {i} ".ljust(10_240, ".")})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        return
    if kind == "gone":  # the app ends without a close: uvicorn drops the connection at once
        return
    if kind == "burst":
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        return
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "bytes": message["text"].encode()})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(  # as the api runs it (infra/bootstrap.py `run_api`)
        app,
        port=port,
        ws=Counting,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, 10, "uvicorn started")
    Counting.writes = []
    yield f"ws://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def received_and_closed(url: str, count: int) -> tuple[list[str | bytes], int | None]:
    """The first `count` messages from `url`, and the code of the close that follows them."""
    async with websockets.connect(url) as ws:
        received = [await ws.recv() for _ in range(count)]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    return received, closed.value.rcvd.code if closed.value.rcvd else None


async def test_frames_sent_in_one_turn_leave_in_one_write_and_the_close_after_them(
    server: str,
) -> None:
    received, code = await received_and_closed(f"{server}/burst/50", 50)
    assert received == [f"frame {i}" for i in range(50)]
    assert code == 4000
    assert frames_per_write() == [50]  # fifty frames, one write, then the close


async def test_frames_sent_synchronously_share_the_write_and_keep_their_order(
    server: str,
) -> None:
    received, code = await received_and_closed(f"{server}/now/20", 20)
    assert received == [f"frame {i}" for i in range(20)]
    assert code == 4000
    assert frames_per_write() == [20]


async def test_a_burst_past_the_high_water_mark_is_written_as_it_goes(server: str) -> None:
    async with websockets.connect(f"{server}/big/100", max_size=None) as ws:
        received = [await ws.recv() for _ in range(100)]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert [r.split(" ", 2)[1] for r in received] == [str(i) for i in range(100)]  # type: ignore[union-attr]
    writes = frames_per_write()
    assert sum(writes) == 100 and len(writes) > 1  # not a megabyte queued in one turn
    assert max(writes) * 10_240 <= QUEUE_LIMIT + 10_240


async def test_frames_sent_right_before_the_app_returns_still_leave(server: str) -> None:
    async with websockets.connect(f"{server}/gone/5") as ws:
        received = [await asyncio.wait_for(ws.recv(), 5) for _ in range(5)]
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert received == [f"frame {i}" for i in range(5)]


async def test_frames_of_separate_turns_are_not_held_back(server: str) -> None:
    async with websockets.connect(f"{server}/turns/5") as ws:
        received = [await asyncio.wait_for(ws.recv(), 5) for _ in range(5)]
        await ws.send("ping")
        echo = await asyncio.wait_for(ws.recv(), 5)  # a reply is written in its own turn
    assert received == [f"frame {i}" for i in range(5)]
    assert echo == b"ping"
    assert frames_per_write() == [1, 1, 1, 1, 1]


async def test_synchronous_frames_of_every_length_arrive_whole(server: str) -> None:
    async with websockets.connect(f"{server}/sizes/0", max_size=None) as ws:
        received = [await ws.recv() for _ in SIZES]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert [len(str(text).encode()) for text in received] == list(SIZES)
    assert all(set(str(text)) <= {"é", "x"} for text in received)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_a_refused_handshake_is_still_answered(server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(f"{server}/refused/0"):
            pass
    assert refused.value.response.status_code == 403
