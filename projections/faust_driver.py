"""A faust app whose Kafka consumer uses a configurable fetch wait.

faust-streaming hardcodes `fetch_max_wait_ms=1500` in its aiokafka driver. Brokers that answer
a waiting fetch late (Tansu) then add up to that much latency to every event, so the worker
consumer here gets the configured value instead, and a longer one once its topics have been
quiet for a while (`infra.kafka.FetchWait`): an idle projector polling every few milliseconds
cost ~10 % of a core, and Tansu as much again.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

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


class LowLatencyApp(faust.App):
    """faust.App with its fetch waits passed through to the worker consumer."""

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
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> driver.Transport:
        return _Transport(self.conf.broker_consumer, self)
