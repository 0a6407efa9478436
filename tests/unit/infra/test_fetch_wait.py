"""A consumer's fetch wait: short while messages flow, long after a quiet spell."""

from __future__ import annotations

from kafka import KafkaConsumer

from infra.kafka import FetchWait, fetch_wait_of, flush_timeout_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_grows_after_a_quiet_spell_and_shrinks_with_the_next_message() -> None:
    clock, applied = Clock(), []
    wait = FetchWait(applied.append, busy_ms=10, idle_ms=100, quiet_s=5.0, clock=clock)
    wait.polled(False)
    clock.now += 4.9
    wait.polled(False)
    assert (applied, wait.current) == ([], 10)  # not quiet long enough
    clock.now += 0.2
    wait.polled(False)
    wait.polled(False)
    assert (applied, wait.current) == ([100], 100)  # set once
    wait.polled(True)
    assert (applied, wait.current) == ([100, 10], 10)
    clock.now += 4.0
    wait.polled(False)  # the quiet spell counts from the last message
    assert applied == [100, 10]


def test_an_idle_wait_below_the_busy_one_is_the_busy_one() -> None:
    clock, applied = Clock(), []
    wait = FetchWait(applied.append, busy_ms=100, idle_ms=20, quiet_s=1.0, clock=clock)
    clock.now += 2
    wait.polled(False)
    assert applied == [] and wait.current == 100


def test_a_kafka_python_consumer_fetches_with_the_wait_it_is_given() -> None:
    # No broker needed: the fetcher reads this setting each time it builds a fetch request.
    consumer = KafkaConsumer(api_version=(3, 9), fetch_max_wait_ms=10)
    try:
        wait = fetch_wait_of(consumer, busy_ms=10, idle_ms=100, quiet_s=0.0)
        wait.polled(False)
        assert consumer._fetcher.config["fetch_max_wait_ms"] == 100
        wait.polled(True)
        assert consumer._fetcher.config["fetch_max_wait_ms"] == 10
    finally:
        consumer.close()


def test_a_flush_waits_a_third_of_the_heartbeat_timeout_within_one_to_ten_seconds() -> None:
    """Heartbeats wait behind a flush: one that hangs on a producer the broker forgot must
    give up well before the steps it reports on are taken for lost."""
    assert flush_timeout_s(3.0) == 1.0
    assert flush_timeout_s(0.5) == 1.0
    assert flush_timeout_s(15.0) == 5.0
    assert flush_timeout_s(30.0) == 10.0
    assert flush_timeout_s(300.0) == 10.0
