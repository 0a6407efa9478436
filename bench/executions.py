"""Executions end to end: throughput of a two-step workflow and step-to-step overhead.

One run, side by side: starts through GraphQL with only relay, projector and api up (the api
alone); orchestrator and runner draining that backlog; chains of 6 runner steps one at a time
(step → step with no load), and chains of 6 transforms (which the orchestrator completes
itself); then a burst of executions started as fast as the api takes them, with runner chains
beside it (end to end, and step → step under load). CPU per process is charged to each phase,
so the reader sees which part costs what.

Every time comes from the event store, not from polling GraphQL: `ExecutionFinished` marks an
execution done, event timestamps say when the orchestrator decided, and `StepSucceeded` carries
the runner's own `started_at`/`finished_at`. All processes share one host, so one clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import psycopg
from kafka import TopicPartition

from bench.harness import (
    OTHER,
    CpuMeter,
    Usage,
    database_of,
    host_line,
    percentile,
    platform,
    services,
    settings_for,
)
from bench.latency import REGISTER, SIGN_UP
from bench.step_floor import Floor, measure_floor
from command_side.execution.store import ExecutionStore
from infra import kafka
from infra.settings import eventsourcing_env_for
from infra.supervisor import supervised

ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }"
CONNECT = "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { edgeId } }"
PUBLISH = "mutation($i: PublishWorkflowInput!) { publishWorkflow(input: $i) { versionNumber } }"
START = "mutation($i: StartExecutionInput!) { startExecution(input: $i) { executionId } }"
TOPIC = "command_side.execution.aggregate:Execution."
FINISHED = TOPIC + "ExecutionFinished"
Steps = dict[str, tuple[str, dict[str, Any]]]
#: trigger.manual → data.transform → data.transform, templates on the inputs and the last step.
PAIR: Steps = {
    "t1": ("data.transform", {"fields": {"n": "{{ inputs.n * 2 }}", "who": "{{ inputs.who }}"}}),
    "t2": (
        "data.transform",
        {"fields": {"text": "{{ steps.t1.output.n }} for {{ steps.t1.output.who }}"}},
    ),
}
#: Six transforms in a row, each adding one to the previous step's number.
TRANSFORMS: Steps = {
    f"s{k}": (
        "data.transform",
        {"fields": {"n": f"{{{{ {'inputs' if k == 1 else f'steps.s{k - 1}.output'}.n + 1 }}}}"}},
    )
    for k in range(1, 7)
}
#: Six steps in a row that runners execute (a filter of the previous step's items): what a
#: step → step gap costs when the step is work for a runner (http, sql, llm, ...).
CHAIN: Steps = {
    f"f{k}": (
        "data.filter",
        {
            "items": "{{ [inputs.n, 1] }}"
            if k == 1
            else f"{{{{ steps.f{k - 1}.output['items'] }}}}",
            "condition": "{{ item >= 0 }}",
        },
    )
    for k in range(1, 7)
}


async def gql(
    http: httpx.AsyncClient, query: str, variables: dict[str, object]
) -> dict[str, object]:
    """One GraphQL call of the set-up (the measured starts go through aiohttp)."""
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return dict(body["data"])


@dataclass
class Timeline:
    """One execution's stored events as (type, epoch seconds, data)."""

    execution_id: str
    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)

    def at(self, kind: str) -> list[float]:
        return [t for k, t, _ in self.events if k == kind]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [d for k, _, d in self.events if k == "StepSucceeded"]

    @property
    def total(self) -> float:
        """Started (committed by the api) → finished, seconds."""
        return self.at("ExecutionFinished")[0] - self.at("ExecutionStarted")[0]

    def gaps(self) -> list[float]:
        """Runner finish of step k → runner start of step k+1 (steps a runner ran)."""
        s = [step for step in self.steps if step.get("runner_id")]
        return [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(s)]

    def stages(self, sent: dict[tuple[str, str], float]) -> dict[str, list[float]]:
        """Where an execution's time goes, stage by stage (seconds). `sent`: when the
        orchestrator produced each task and the runner each result (Kafka CreateTime, 1 ms
        resolution)."""
        out: dict[str, list[float]] = {}

        def add(stage: str, seconds: float) -> None:
            out.setdefault(stage, []).append(seconds)

        begun, admitted = self.at("ExecutionStarted")[0], self.at("ExecutionAdmitted")[0]
        finished = self.at("ExecutionFinished")[0]
        # When each step was decided: its StepScheduled, or for a step the orchestrator
        # completed as it began it (no runner), its StepSucceeded alone.
        scheduled = {d["node_id"]: t for k, t, d in self.events if k == "StepScheduled"}
        done = [(t, d) for k, t, d in self.events if k == "StepSucceeded"]
        decided = [scheduled.get(d["node_id"], t) for t, d in done]
        add("started → admitted (relay, Kafka, orchestrator)", admitted - begun)
        add("admitted → first step decided", decided[0] - admitted)
        for begun_at, (noted, step) in zip(decided, done, strict=True):
            if not step.get("runner_id"):
                continue
            task_id = f"{self.execution_id}:{step['node_id']}:{step['attempt']}"
            task, result = sent[("task", task_id)], sent[("result", task_id)]
            add("scheduled → orchestrator sends the task (commit)", task - begun_at)
            add("task sent → runner starts (Kafka, runner poll)", step["started_at"] - task)
            add("runner runs the step", step["finished_at"] - step["started_at"])
            add("runner finishes → sends the result", result - step["finished_at"])
            add("result sent → orchestrator records (Kafka, poll)", noted - result)
        for (noted, _), next_decided in zip(done, decided[1:], strict=False):
            add("recorded → next step decided", next_decided - noted)
        add("last step recorded → finished", finished - done[-1][0])
        add("total (started → finished)", finished - begun)
        return out


def sent_at(bootstrap: str) -> dict[tuple[str, str], float]:
    """When each task and each result was produced, read back from the topics."""
    consumer = kafka.make_consumer(bootstrap, "bench-read-back")
    tps = [
        TopicPartition(topic, p)
        for topic in (kafka.tasks_topic("default"), kafka.RESULTS_TOPIC)
        for p in consumer.partitions_for_topic(topic) or ()
    ]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    out: dict[tuple[str, str], float] = {}
    while any(consumer.position(tp) < ends[tp] for tp in tps):
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                message = json.loads(record.value)
                kind = "task" if tp.topic != kafka.RESULTS_TOPIC else message.get("kind")
                out[(str(kind), str(message.get("task_id")))] = record.timestamp / 1000
    consumer.close()
    return out


class Events:
    """Reads executions' stored events (eventsourcing's own transcoder decodes the state)."""

    def __init__(self, database_url: str) -> None:
        self._store = ExecutionStore(env=eventsourcing_env_for(database_url))
        self._conn = psycopg.connect(database_url, autocommit=True)

    def finished(self, ids: list[str]) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM execution_events WHERE originator_id = ANY(%s::uuid[]) "
            "AND topic = %s",
            (ids, FINISHED),
        ).fetchone()
        return int(row[0]) if row else 0

    async def wait(self, ids: list[str], timeout: float, every: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        # On a thread: the side loops and the burst share this event loop.
        while (done := await asyncio.to_thread(self.finished, ids)) < len(ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {len(ids)} executions finished")
            await asyncio.sleep(every)

    def timelines(self, ids: list[str]) -> list[Timeline]:
        rows = self._conn.execute(
            "SELECT originator_id, topic, state FROM execution_events "
            "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version",
            (ids,),
        ).fetchall()
        decode = self._store.mapper.transcoder.decode
        out: dict[Any, Timeline] = {}
        for eid, topic, state in rows:
            data = decode(bytes(state))
            kind = str(topic).removeprefix(TOPIC)
            out.setdefault(eid, Timeline(str(eid))).events.append(
                (kind, data["timestamp"].timestamp(), data)
            )
        for timeline in out.values():
            statuses = [d["status"] for k, _, d in timeline.events if k == "ExecutionFinished"]
            if statuses != ["SUCCEEDED"]:
                raise RuntimeError(f"an execution ended {statuses}: {timeline.events[-3:]}")
        return list(out.values())

    def close(self) -> None:
        self._conn.close()
        self._store.close()


async def signed_up(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return str((await gql(http, REGISTER, {"i": SIGN_UP}))["register"]["accessToken"])  # type: ignore[index]


def client(url: str, token: str, connections: int = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=60,
        headers={"authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=connections),
    )


async def publish(http: httpx.AsyncClient, steps: Steps) -> str:
    """A published workflow: trigger.manual, then the steps in a row."""
    created = await gql(http, 'mutation { createWorkflow(input: {name: "b"}) { workflowId } }', {})
    wid = str(created["createWorkflow"]["workflowId"])  # type: ignore[index]
    nodes = [
        ("start", "trigger.manual", {}),
        *((n, kind, config) for n, (kind, config) in steps.items()),
    ]
    for node_id, kind, config in nodes:
        await gql(
            http, ADD, {"i": {"workflowId": wid, "nodeId": node_id, "type": kind, "config": config}}
        )
    for (a, *_), (b, *_) in itertools.pairwise(nodes):
        await gql(http, CONNECT, {"i": {"workflowId": wid, "sourceId": a, "targetId": b}})
    await gql(http, PUBLISH, {"i": {"workflowId": wid}})
    return wid


async def start(http: httpx.AsyncClient, wid: str, n: int) -> str:
    started = await gql(http, START, {"i": {"workflowId": wid, "inputs": {"n": n, "who": "b"}}})
    return str(started["startExecution"]["executionId"])  # type: ignore[index]


@dataclass
class Burst:
    ids: list[str]
    first_sent: float  # epoch seconds
    last_answered: float

    @property
    def start_rate(self) -> float:
        return len(self.ids) / (self.last_answered - self.first_sent)


async def burst(url: str, token: str, wid: str, n: int, clients: int, in_flight: int) -> Burst:
    """Start n executions as fast as the api takes them: `clients` HTTP clients, each with
    `in_flight` requests outstanding. The load generator shares the two cores with what it
    measures, so it is aiohttp here (about half the CPU per request of httpx)."""
    ids: list[str] = []
    numbers = iter(range(n))
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    sessions = [
        aiohttp.ClientSession(
            base_url=url, headers=headers, connector=aiohttp.TCPConnector(limit=in_flight)
        )
        for _ in range(clients)
    ]

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in numbers:
            variables = {"i": {"workflowId": wid, "inputs": {"n": i, "who": "b"}}}
            body = json.dumps({"query": START, "variables": variables})
            async with session.post("/graphql", data=body) as response:
                answer = await response.json()
            if answer.get("errors"):
                raise RuntimeError(answer["errors"])
            ids.append(str(answer["data"]["startExecution"]["executionId"]))

    first = time.time()
    await asyncio.gather(*(worker(s) for s in sessions for _ in range(in_flight)))
    last = time.time()
    for s in sessions:
        await s.close()
    return Burst(ids, first, last)


async def one_at_a_time(
    http: httpx.AsyncClient, events: Events, wid: str, until: asyncio.Event | int, every: float
) -> list[str]:
    """Executions each started when the one before has finished (looked for every `every`
    seconds: that only paces the loop, the measured times come from the events)."""
    ids: list[str] = []
    while not (until.is_set() if isinstance(until, asyncio.Event) else len(ids) >= until):
        ids.append(await start(http, wid, len(ids)))
        await events.wait(ids[-1:], timeout=150, every=every)
    return ids


async def under_load(
    url: str,
    token: str,
    events: Events,
    pair: str,
    chain: str,
    n: int,
    clients: int,
    in_flight: int,
    side: int,
) -> tuple[Burst, list[str]]:
    """A burst of n pair executions and, beside it, `side` loops each running chain
    executions one at a time."""
    loaded = asyncio.Event()
    async with client(url, token) as http:
        sides = [
            asyncio.create_task(one_at_a_time(http, events, chain, loaded, 0.05))
            for _ in range(side)
        ]
        started = await burst(url, token, pair, n, clients, in_flight)
        await events.wait(started.ids, timeout=150)
        loaded.set()
        return started, [eid for ids in await asyncio.gather(*sides) for eid in ids]


def ms(values: list[float]) -> str:
    """p50, p90, p99 in ms, and the count."""
    v = [x * 1000 for x in values]
    if not v:
        return f"{'—':>7} {'—':>7} {'—':>7} {0:6}"
    return f"{percentile(v, 50):7.1f} {percentile(v, 90):7.1f} {percentile(v, 99):7.1f} {len(v):6}"


def merged(timelines: list[Timeline], sent: dict[tuple[str, str], float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in timelines:
        for stage, values in t.stages(sent).items():
            out.setdefault(stage, []).extend(values)
    return out


@dataclass
class Results:
    n: int
    shape: str
    #: Runner chains, one at a time, in the "one chain" CPU window (the later half of them:
    #: the projector may still be folding the backlog's events while the first ones run).
    chains: int
    alone: Burst
    drain_rate: float
    loaded: Burst
    e2e_rate: float
    gaps: dict[str, list[float]]
    #: The same gap with nothing of the platform in it (`bench.step_floor`).
    floor: Floor
    totals: dict[str, list[float]]
    stages: tuple[dict[str, list[float]], dict[str, list[float]]]
    cpu: tuple[Usage, Usage, Usage, Usage]  # api alone, backlog drain, end to end, one chain

    def line(self) -> str:
        unloaded = percentile([g * 1000 for g in next(iter(self.gaps.values()))], 50)
        floor = percentile(self.floor.gaps_ms, 50)
        return (
            f"executions: {self.e2e_rate:.0f} exec/s end to end ({self.n} of a 2-transform "
            f"workflow; api alone {self.alone.start_rate:.0f} starts/s, backlog drain "
            f"{self.drain_rate:.0f} exec/s), step → step p50 {unloaded:.1f} ms unloaded "
            f"(the bare floor on this broker: {floor:.1f} ms)"
        )

    def table(self) -> str:
        rate = "{:>9.0f} {}"
        rows = [
            f"executions of {self.shape}",
            f"  {'api alone (relay + projector up; no orchestrator, runner)':58}"
            + rate.format(self.alone.start_rate, "starts/s"),
            f"  {'orchestrator + runner draining that backlog':58}"
            + rate.format(self.drain_rate, "exec/s"),
            f"  {f'end to end: {self.n} started → all SUCCEEDED (target ≥ 250)':58}"
            + rate.format(self.e2e_rate, "exec/s"),
            f"  {'  starts answered meanwhile':58}"
            + rate.format(self.loaded.start_rate, "starts/s"),
            # Both halves on the same cores, each at its own cost: 1 / (1/a + 1/d).
            f"  {'  api and drain sharing the cores: 1 / (1/api + 1/drain)':58}"
            + rate.format(1 / (1 / self.alone.start_rate + 1 / self.drain_rate), "exec/s"),
            f"{'step → step (runner finish k → runner start k+1), ms':60}"
            "    p50     p90     p99      n",
        ]
        rows += [f"  {name:58}{ms(values)}" for name, values in self.gaps.items()]
        floor = "the floor: kafka-python ↔ Tansu, one commit (step_floor)"
        rows.append(f"  {floor:58}{ms([g / 1000 for g in self.floor.gaps_ms])}")
        rows.append(
            f"{'whole executions (started → finished), ms':60}    p50     p90     p99      n"
        )
        rows += [f"  {name:58}{ms(values)}" for name, values in self.totals.items()]
        rows.append(
            f"{'stages, ms: runner chain one at a time / load':60}    p50     p90     p99      n"
        )
        idle, load = self.stages
        for stage in [*idle, *(s for s in load if s not in idle)]:
            rows.append(f"  {stage:58}{ms(idle.get(stage, []))}")
            rows.append(f"  {'':58}{ms(load.get(stage, []))}")
        heads = ("api alone", "backlog drain", "end to end", "one chain")
        rows.append(
            f"{'CPU: cores busy, ms per execution':60}" + "".join(f"{h:>13}   " for h in heads)
        )
        e2e = self.cpu[2][0]
        ours = sorted((p for p in e2e if p != OTHER), key=lambda p: -e2e[p])
        counts = (len(self.alone.ids), len(self.alone.ids), self.n, self.chains)
        for part in [*ours, "total of this benchmark", OTHER]:
            cells = ""
            for (used, wall), count in zip(self.cpu, counts, strict=True):
                total = sum(used.get(p, 0.0) for p in ours)
                s = total if part.startswith("total") else used.get(part, 0.0)
                cells += f"{s / wall:6.2f} {s / count * 1000:6.1f}   "
            rows.append(f"  {part:58}{cells}")
        return "\n".join(rows)


def measure(
    n: int = 2000,
    backlog: int = 1000,
    chains: int = 200,
    clients: int = 4,
    in_flight: int = 8,
    side: int = 8,
) -> Results:
    with services() as svc:
        settings = settings_for(svc)
        events = Events(svc.database_url)
        with (
            CpuMeter(database_of(svc)) as cpu,
            platform(settings),
        ):  # no orchestrator, no runner yet
            url = f"http://127.0.0.1:{settings.api_port}"
            token = asyncio.run(signed_up(url))

            async def workflows() -> tuple[str, str, str]:
                async with client(url, token) as http:
                    return (
                        await publish(http, PAIR),
                        await publish(http, CHAIN),
                        await publish(http, TRANSFORMS),
                    )

            pair, chain, transforms = asyncio.run(workflows())
            alone = asyncio.run(burst(url, token, pair, backlog, clients, in_flight))
            with supervised(settings, ("orchestrator", "runner")):
                asyncio.run(events.wait(alone.ids, timeout=120))

                async def idle() -> tuple[list[str], list[str]]:
                    async with client(url, token) as http:
                        return (
                            await one_at_a_time(http, events, chain, chains, 0.005),
                            await one_at_a_time(http, events, transforms, chains // 2, 0.005),
                        )

                idle_ids, transform_ids = asyncio.run(idle())
                args = (url, token, events, pair, chain, n, clients, in_flight, side)
                loaded, side_ids = asyncio.run(under_load(*args))
        drained = events.timelines(alone.ids)
        idle_runs = events.timelines(idle_ids)
        transform_runs = events.timelines(transform_ids)
        load_runs = events.timelines(loaded.ids)
        side_runs = events.timelines(side_ids)
        events.close()
        sent = sent_at(svc.bootstrap)
        # The same broker and database with every platform process stopped.
        floor = measure_floor(
            svc.bootstrap,
            svc.database_url,
            settings.kafka_fetch_max_wait_ms,
            partitions=settings.kafka_partitions,
        )
    by_start = sorted(idle_runs, key=lambda t: t.at("ExecutionStarted")[0])
    later_chains = by_start[len(by_start) // 2 :]
    first_admit = min(t.at("ExecutionAdmitted")[0] for t in drained)
    drain_end = max(t.at("ExecutionFinished")[0] for t in drained)
    load_end = max(t.at("ExecutionFinished")[0] for t in load_runs)
    during = [
        t
        for t in side_runs
        if loaded.first_sent <= t.at("ExecutionStarted")[0]
        and t.at("ExecutionFinished")[0] <= load_end
    ]
    return Results(
        n=n,
        shape=f"trigger.manual → data.transform → data.transform, {clients} clients × "  # noqa: RUF001
        f"{in_flight} in flight; {backlog} backlog, {chains} chains",
        chains=len(later_chains),
        alone=alone,
        drain_rate=backlog / (drain_end - first_admit),
        loaded=loaded,
        e2e_rate=n / (load_end - loaded.first_sent),
        gaps={
            f"6 runner steps in a row, one chain at a time ({len(idle_runs)} runs)": [
                g for t in idle_runs for g in t.gaps()
            ],
            f"the same beside the load ({len(during)} runs)": [g for t in during for g in t.gaps()],
        },
        floor=floor,
        totals={
            "6 runner steps in a row, one at a time": [t.total for t in idle_runs],
            "6 transforms in a row, one at a time": [t.total for t in transform_runs],
            "trigger → 2 transforms, the load's own": [t.total for t in load_runs],
        },
        stages=(merged(idle_runs, sent), merged(load_runs, sent)),
        cpu=(
            cpu.window(alone.first_sent, alone.last_answered),
            cpu.window(first_admit, drain_end),
            cpu.window(loaded.first_sent, load_end),
            # A single chain keeps most of the two cores busy: what each step costs where.
            cpu.window(
                later_chains[0].at("ExecutionStarted")[0],
                max(t.at("ExecutionFinished")[0] for t in later_chains),
            ),
        ),
    )


def run() -> str:
    """One line for `make bench`."""
    return measure().line()


def main() -> None:
    print(host_line())
    print(measure().table(), flush=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# load average after: {load}")


if __name__ == "__main__":
    main()
