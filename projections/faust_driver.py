"""A faust app whose Kafka consumer uses a configurable fetch wait and whose idle agents sleep.

faust-streaming hardcodes `fetch_max_wait_ms=1500` in its aiokafka driver. Brokers that answer
a waiting fetch late (Tansu) then add up to that much latency to every event, so the worker
consumer here gets the configured value instead, and a longer one once its topics have been
quiet for a while (`infra.kafka.FetchWait`): an idle projector polling every few milliseconds
cost ~10 % of a core, and Tansu as much again.

faust's `Stream.take(max_, within)` wakes every `within` seconds, values or not: with a 10 ms
window, four agents cost an idle projector 9 % of a core (11.7 % against 2.7 % without).
`BatchingStream.take` sleeps until a value arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import aiokafka
import faust
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode import Seconds, want_seconds
from mode.utils.futures import notify

from infra.kafka import FetchWait


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    _fetch_wait: FetchWait | None = None

    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app: Any = self.app
        # Read by AIOKafkaConsumer.start() when it builds its fetcher...
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # type: ignore[attr-defined]

        def apply(ms: int) -> None:
            fetcher = getattr(consumer, "_fetcher", None)
            if fetcher is not None:  # ...which reads it again for each fetch request
                fetcher._fetch_max_wait_ms = ms

        self._fetch_wait = FetchWait(
            apply, app.fetch_max_wait_ms, app.idle_fetch_max_wait_ms, app.idle_after_s
        )
        return consumer

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        records = await super().getmany(active_partitions, timeout)
        if self._fetch_wait is not None:
            self._fetch_wait.polled(any(records.values()))
        return records


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class BatchingStream(faust.Stream):  # type: ignore[type-arg]
    """A faust stream whose `take` waits for the first value without a timer."""

    def take(self, max_: int, within: Seconds) -> AsyncGenerator[Sequence[Any], None]:
        """Batches of at most `max_` values, yielded when full or at the end of a `within`
        window, as faust's; but nothing wakes while no value comes. The events of a batch are
        acknowledged after the consumer of the batch is done with it.

        faust's own `take` (faust-streaming 0.15, faust/streams.py) with one change: its loop
        waits for a full buffer with the timeout whether the buffer holds anything or not.
        Here it first waits for a value, then for the end of the window it arrived in (the
        windows keep faust's phase, so a lone value waits as long as it would there). The
        generator is registered with the stream, as faust's, to be closed when it stops.
        """
        agen = self._take(max_, within)
        self._active_agens.add(agen)
        return agen

    async def _take(self, max_: int, within: Seconds) -> AsyncGenerator[Sequence[Any], None]:
        buffer: list[Any] = []
        events: list[Any] = []
        has_values = asyncio.Event()
        full = asyncio.Event()
        consumed = asyncio.Event()
        timeout = want_seconds(within) if within else None
        consuming: asyncio.Future[None] | None = None

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            try:
                if consuming is not None:  # the batch before this value is being consumed
                    try:
                        await consuming
                    finally:
                        consuming = None
                buffer.append(value)
                event = self.current_event
                if event is None:
                    raise RuntimeError("take: a value arrived without its event")
                events.append(event)
                has_values.set()
                if len(buffer) >= max_:
                    full.set()
                    consumed.clear()  # never more than max_ values in a batch
                    await self.wait(consumed)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        enable_acks = self.enable_acks
        self.enable_acks = False  # acknowledged here, once the batch is consumed
        self.add_processor(add_to_buffer)
        self._enable_passive(self.channel)  # type: ignore[arg-type]
        began = self.loop.time()
        try:
            while not self.should_stop:
                stopped = await self.wait_for_stopped(has_values)  # type: ignore[arg-type]
                if stopped and not buffer:
                    break
                if timeout is not None and not full.is_set():
                    left = timeout - (self.loop.time() - began) % timeout
                    await self.wait_for_stopped(full, timeout=left)  # type: ignore[arg-type]
                if not buffer:
                    continue
                consuming = self.loop.create_future()
                try:
                    yield list(buffer)
                finally:
                    buffer.clear()
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    has_values.clear()
                    notify(consuming)
                    full.clear()
                    consumed.set()
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(add_to_buffer)


class LowLatencyApp(faust.App):
    """faust.App with its fetch waits passed through to the worker consumer and agents that
    sleep while their topics are quiet (`BatchingStream`)."""

    def __init__(
        self,
        *args: Any,
        fetch_max_wait_ms: int = 5,
        idle_fetch_max_wait_ms: int = 100,
        idle_after_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.idle_fetch_max_wait_ms = idle_fetch_max_wait_ms
        self.idle_after_s = idle_after_s
        kwargs.setdefault("Stream", BatchingStream)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> driver.Transport:
        return _Transport(self.conf.broker_consumer, self)
