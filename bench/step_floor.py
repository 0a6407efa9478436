"""The floor under step → step: the least any orchestrator and runner on this broker, these
clients and this database could do between two steps, and nothing else.

Two processes pass a counter back and forth through Tansu with the platform's own Kafka
clients (`infra.kafka`: kafka-python, acks=all, the configured fetch wait). The "runner" takes
a task and sends its result at once (no step, no offset commit); the "orchestrator" takes the
result, commits one row to PostgreSQL (the durable commit DESIGN principle 2 puts before every
task), sends the next task and commits its offset without waiting. A gap is runner sends
result k → runner has task k+1: what `bench.executions` reports as step → step, less
everything the platform does besides. What this machine cannot do here, the platform cannot
do either. Usage: `python -m bench.step_floor [steps]` (default 300).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import dataclass
from multiprocessing.synchronize import Event

import psycopg

from bench.harness import host_line, percentile, services
from infra import kafka
from infra.settings import load_settings

TABLE_DDL = """CREATE TABLE IF NOT EXISTS bench_floor_steps
    (run text, step bigint, at float8, PRIMARY KEY (run, step))"""
STEP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Floor:
    fetch_wait_ms: int
    gaps_ms: list[float]

    def line(self) -> str:
        g = sorted(self.gaps_ms)
        return (
            f"step floor (kafka-python ↔ Tansu, one PostgreSQL commit, fetch wait "
            f"{self.fetch_wait_ms} ms): step → step p50 {percentile(g, 50):.1f} / "
            f"p90 {percentile(g, 90):.1f} / p99 {percentile(g, 99):.1f} ms, n={len(g)}"
        )


def _topics(group: str) -> tuple[str, str]:
    """Tasks and results of one run: its own topics, so runs on one broker never mix."""
    return f"{group}.tasks", f"{group}.results"


def _consumer(bootstrap: str, topic: str, group: str, fetch_wait_ms: int) -> kafka.KafkaConsumer:
    consumer = kafka.make_consumer(
        bootstrap, group, group_id=group, fetch_max_wait_ms=fetch_wait_ms
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group} got no partitions of {topic}")
        consumer.poll(timeout_ms=100)
    return consumer


def _orchestrator(
    bootstrap: str, database_url: str, fetch_wait_ms: int, group: str, steps: int, ready: Event
) -> None:
    tasks, results = _topics(group)
    consumer = _consumer(bootstrap, results, f"{group}-orchestrator", fetch_wait_ms)
    producer = kafka.make_producer(bootstrap, f"{group}-orchestrator")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        ready.set()
        while True:
            for batch in consumer.poll(timeout_ms=100).values():
                for record in batch:
                    step = int(record.value)
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO bench_floor_steps VALUES (%s, %s, %s)",
                            (group, step, time.time()),
                        )
                    producer.send(tasks, key=b"x", value=str(step + 1).encode())
                    producer.flush()
                    consumer.commit_async()
                    if step >= steps:
                        producer.close()
                        consumer.close()
                        return


def _runner(
    bootstrap: str,
    fetch_wait_ms: int,
    group: str,
    steps: int,
    ready: Event,
    out: multiprocessing.Queue[list[float]],
) -> None:
    tasks, results = _topics(group)
    consumer = _consumer(bootstrap, tasks, f"{group}-runner", fetch_wait_ms)
    producer = kafka.make_producer(bootstrap, f"{group}-runner")
    ready.set()
    gaps: list[float] = []
    reported: float | None = None
    while len(gaps) < steps:
        for batch in consumer.poll(timeout_ms=100).values():
            for record in batch:
                if reported is not None:
                    gaps.append((time.time() - reported) * 1000)
                reported = time.time()
                producer.send(results, key=b"x", value=record.value)
                producer.flush()
    producer.close()
    consumer.close()
    out.put(gaps)


def measure_floor(
    bootstrap: str, database_url: str, fetch_wait_ms: int, steps: int = 300, partitions: int = 4
) -> Floor:
    """Pass `steps` tasks through a bare orchestrator and runner on `bootstrap`."""
    context = multiprocessing.get_context("spawn")
    group = f"bench-floor-{uuid.uuid4().hex[:8]}"
    # As many partitions as the platform's topics (`AUTOOPS_KAFKA_PARTITIONS`).
    kafka.ensure_topics(bootstrap, partitions, _topics(group))
    ready = [context.Event(), context.Event()]
    out: multiprocessing.Queue[list[float]] = context.Queue()
    # The warm-up steps (the first of them crosses a fresh connection) are not counted.
    warm = 20
    procs = [
        context.Process(
            target=_orchestrator,
            args=(bootstrap, database_url, fetch_wait_ms, group, steps + warm + 1, ready[0]),
        ),
        context.Process(
            target=_runner, args=(bootstrap, fetch_wait_ms, group, steps + warm, ready[1], out)
        ),
    ]
    for proc in procs:
        proc.start()
    try:
        for event in ready:
            if not event.wait(STEP_TIMEOUT_S):
                raise TimeoutError("the floor's processes did not start")
        producer = kafka.make_producer(bootstrap, f"{group}-first")
        producer.send(_topics(group)[1], key=b"x", value=b"0").get(timeout=10)
        producer.close()
        gaps = out.get(timeout=STEP_TIMEOUT_S + steps)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return Floor(fetch_wait_ms, gaps[warm:])


def run(steps: int = 300) -> str:
    """One line for `make bench`."""
    settings = load_settings(os.environ)
    with services() as svc:
        floor = measure_floor(
            svc.bootstrap,
            svc.database_url,
            settings.kafka_fetch_max_wait_ms,
            steps,
            settings.kafka_partitions,
        )
    return floor.line()


def main() -> None:
    print(host_line())
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 300), flush=True)


if __name__ == "__main__":
    main()
