"""A faust app whose Kafka consumer uses a configurable fetch wait.

faust-streaming hardcodes `fetch_max_wait_ms=1500` in its aiokafka driver. Brokers that answer
a waiting fetch late (Tansu) then add up to that much latency to every event, so the worker
consumer here gets the configured value instead.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class LowLatencyApp(faust.App):
    """faust.App with `fetch_max_wait_ms` passed through to the worker consumer."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 5, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> driver.Transport:
        return _Transport(self.conf.broker_consumer, self)
