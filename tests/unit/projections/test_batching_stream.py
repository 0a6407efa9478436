"""`BatchingStream.take`: faust's batching without a timer while no value comes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from projections.faust_driver import BatchingStream, LowLatencyApp


@pytest.fixture
def app(tmp_path: Path) -> LowLatencyApp:
    app = LowLatencyApp("test-batching", broker="memory://", web_enabled=False,
                        datadir=str(tmp_path))  # fmt: skip
    app.flow_control.resume()  # in-memory channels accept values without a running worker
    return app


class Recorder:
    """Consumes `take(max_, within)` batches; notes batches, acknowledgements and wake-ups."""

    def __init__(self, app: LowLatencyApp, max_: int, within: float) -> None:
        self.channel = app.channel()
        self.stream = app.stream(self.channel)
        assert isinstance(self.stream, BatchingStream)
        self.log: list[Any] = []
        self.wakeups = 0
        self.batch_arrived = asyncio.Event()
        self.acked = asyncio.Event()
        waits, acks = self.stream.wait_for_stopped, self.stream.ack

        async def counted(*args: Any, **kwargs: Any) -> bool:
            self.wakeups += 1
            return await waits(*args, **kwargs)

        async def ack(event: Any) -> bool:
            self.log.append(("ack", event.value))
            self.acked.set()
            return await acks(event)

        self.stream.wait_for_stopped = counted  # type: ignore[method-assign]
        self.stream.ack = ack  # type: ignore[method-assign]
        self.task = asyncio.create_task(self._consume(max_, within))

    async def _consume(self, max_: int, within: float) -> None:
        async for batch in self.stream.take(max_, within=within):
            self.log.append(("batch", batch))
            await asyncio.sleep(0)  # the consumer works on the batch...
            self.log.append(("done", batch))  # ...and acknowledgements come only after
            self.batch_arrived.set()

    async def batches(self, count: int) -> list[list[int]]:
        async def enough() -> None:
            while sum(1 for kind, _ in self.log if kind == "done") < count:
                self.batch_arrived.clear()
                await self.batch_arrived.wait()

        await asyncio.wait_for(enough(), 10)
        return [batch for kind, batch in self.log if kind == "batch"]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stream.stop()  # its background drain of the channel too


async def test_an_idle_stream_does_not_wake(app: LowLatencyApp) -> None:
    recorder = Recorder(app, max_=3, within=0.005)
    try:
        # Time passing with nothing to take is the behaviour under test: faust's own take
        # would wake every 5 ms (about 40 times here).
        await asyncio.sleep(0.2)
        assert recorder.wakeups <= 1
        assert recorder.log == []
    finally:
        await recorder.close()


async def test_full_batches_leave_whole_and_the_rest_in_a_batch_of_its_own(
    app: LowLatencyApp,
) -> None:
    recorder = Recorder(app, max_=3, within=0.05)
    try:
        for value in range(7):
            await recorder.channel.send(value=value)
        assert await recorder.batches(3) == [[0, 1, 2], [3, 4, 5], [6]]
    finally:
        await recorder.close()


async def test_a_batch_is_acknowledged_after_its_consumer_is_done(app: LowLatencyApp) -> None:
    recorder = Recorder(app, max_=2, within=0.01)
    try:
        for value in range(3):
            await recorder.channel.send(value=value)
        await recorder.batches(2)
        await asyncio.wait_for(_acked(recorder, 3), 10)
        assert recorder.log == [
            ("batch", [0, 1]), ("done", [0, 1]), ("ack", 0), ("ack", 1),
            ("batch", [2]), ("done", [2]), ("ack", 2),
        ]  # fmt: skip
    finally:
        await recorder.close()


async def _acked(recorder: Recorder, count: int) -> None:
    while sum(1 for kind, _ in recorder.log if kind == "ack") < count:
        recorder.acked.clear()
        await recorder.acked.wait()
