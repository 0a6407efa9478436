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
import queue
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any, cast

import psycopg

from bench.harness import host_line, percentile, services, settings_for
from infra import kafka

TABLE_DDL = """CREATE TABLE IF NOT EXISTS bench_floor_steps
    (run text, step bigint, at float8, PRIMARY KEY (run, step))"""
#: Steps before the measured ones (the first crosses fresh connections), not counted.
WARM_UP = 20
START_TIMEOUT_S = 60.0
#: A step far longer than this is a hang, not a measurement.
STEP_TIMEOUT_S = 1.0
#: What a side tells the parent: ("ready", side), ("gaps", [ms, …]) or ("failed", traceback).
Report = tuple[str, object]


@dataclass(frozen=True)
class Floor:
    fetch_wait_ms: int
    gaps_ms: list[float]

    def line(self) -> str:
        g = self.gaps_ms  # `percentile` sorts
        return (
            f"step floor (kafka-python ↔ Tansu, one PostgreSQL commit, fetch wait "
            f"{self.fetch_wait_ms} ms): step → step p50 {percentile(g, 50):.1f} / "
            f"p90 {percentile(g, 90):.1f} / p99 {percentile(g, 99):.1f} ms, n={len(g)}"
        )


def _topics(group: str) -> tuple[str, str]:
    """Tasks and results of one run: its own topics, so runs on one broker never mix."""
    return f"{group}.tasks", f"{group}.results"


def _consumer(
    bootstrap: str, topic: str, group: str, fetch_wait_ms: int, deadline: float
) -> kafka.KafkaConsumer:
    consumer = kafka.make_consumer(
        bootstrap, group, group_id=group, fetch_max_wait_ms=fetch_wait_ms
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        _before(deadline, f"{group} got no partitions of {topic}")
        consumer.poll(timeout_ms=100)
    return consumer


def _before(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(what)


def _orchestrator(
    out: Queue[Report], bootstrap: str, database_url: str, fetch_wait_ms: int, group: str,
    last: int, deadline: float,
) -> None:  # fmt: skip
    tasks, results = _topics(group)
    consumer = _consumer(bootstrap, results, f"{group}-orchestrator", fetch_wait_ms, deadline)
    producer = kafka.make_producer(bootstrap, f"{group}-orchestrator")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        out.put(("ready", "orchestrator"))
        while True:
            _before(deadline, "the orchestrator did not see the last result")
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
                    if step >= last:
                        producer.close()
                        consumer.close()
                        return


def _runner(
    out: Queue[Report], bootstrap: str, fetch_wait_ms: int, group: str, gaps_wanted: int,
    deadline: float,
) -> None:  # fmt: skip
    tasks, results = _topics(group)
    consumer = _consumer(bootstrap, tasks, f"{group}-runner", fetch_wait_ms, deadline)
    producer = kafka.make_producer(bootstrap, f"{group}-runner")
    out.put(("ready", "runner"))
    gaps: list[float] = []
    reported: float | None = None
    while len(gaps) < gaps_wanted:
        _before(deadline, f"the runner saw {len(gaps)} of {gaps_wanted} steps")
        for batch in consumer.poll(timeout_ms=100).values():
            for record in batch:
                if reported is not None:
                    gaps.append((time.perf_counter() - reported) * 1000)
                reported = time.perf_counter()
                producer.send(results, key=b"x", value=record.value)
                producer.flush()
    producer.close()
    consumer.close()
    out.put(("gaps", gaps))


def _reporting(target: Callable[..., None], out: Queue[Report], *args: Any) -> None:
    """Runs a side in its process; its failure reaches the parent with the traceback."""
    try:
        target(out, *args)
    except BaseException:
        out.put(("failed", traceback.format_exc()))
        raise


def measure_floor(
    bootstrap: str, database_url: str, fetch_wait_ms: int, steps: int = 300, partitions: int = 4
) -> Floor:
    """Pass `steps` tasks (and `WARM_UP` more first) through a bare orchestrator and runner
    on `bootstrap`, each side a process of its own."""
    context = multiprocessing.get_context("spawn")
    group = f"bench-floor-{uuid.uuid4().hex[:8]}"
    # As many partitions as the platform's topics (`AUTOOPS_KAFKA_PARTITIONS`).
    kafka.ensure_topics(bootstrap, partitions, _topics(group))
    out: Queue[Report] = context.Queue()
    deadline = time.monotonic() + START_TIMEOUT_S + steps * STEP_TIMEOUT_S
    # The runner takes tasks 1 … steps + WARM_UP + 1; the orchestrator answers up to the last.
    last = steps + WARM_UP + 1
    sides = {
        "orchestrator": (_orchestrator, bootstrap, database_url, fetch_wait_ms, group, last),
        "runner": (_runner, bootstrap, fetch_wait_ms, group, steps + WARM_UP),
    }
    procs = [
        context.Process(
            target=_reporting, args=(side[0], out, *side[1:], deadline), name=name, daemon=True
        )
        for name, side in sides.items()
    ]
    for proc in procs:
        proc.start()
    finished = False
    try:
        ready: set[str] = set()
        while len(ready) < len(procs):
            ready.add(str(_next(out, procs, deadline, "ready")))
        producer = kafka.make_producer(bootstrap, f"{group}-first")
        producer.send(_topics(group)[1], key=b"x", value=b"0").get(timeout=10)
        producer.close()
        gaps = cast(list[float], _next(out, procs, deadline, "gaps"))
        finished = True
    finally:
        for proc in procs:
            proc.join(10 if finished else 0)  # after a failure the other side is stopped
            if proc.is_alive():
                proc.kill()
                proc.join()
    return Floor(fetch_wait_ms, gaps[WARM_UP:])


def _next(out: Queue[Report], procs: list[Any], deadline: float, kind: str) -> object:
    """The next report of `kind`; a side that failed or died raises here, with its cause."""
    while True:
        try:
            got, value = out.get(timeout=0.5)
        except queue.Empty:
            got, value = "", None
        if not got:
            for proc in procs:
                if proc.exitcode not in (None, 0):
                    raise RuntimeError(f"the floor's {proc.name} exited with {proc.exitcode}")
            _before(deadline, f"no {kind!r} from the floor's processes")
            continue
        if got == "failed":
            raise RuntimeError(f"a side of the floor failed:\n{value}")
        if got != kind:
            raise RuntimeError(f"the floor's processes reported {got!r}, not {kind!r}")
        return value


def run(steps: int = 300) -> str:
    """The floor on a broker and database of its own, in one line (`make bench` has it from
    `bench.executions`, side by side with the chain)."""
    with services() as svc:
        settings = settings_for(svc)
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
