"""Executions end to end: throughput of a two-step workflow and step-to-step overhead.

Every time comes from the event store, not from polling GraphQL: `ExecutionFinished` marks an
execution done, event timestamps say when the orchestrator decided, and `StepSucceeded` carries
the runner's own `started_at`/`finished_at`. All processes share one host, so one clock.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from bench.harness import percentile, platform, services, settings_for
from bench.latency import REGISTER, SIGN_UP, gql
from command_side.execution.store import ExecutionStore
from infra.settings import eventsourcing_env_for
from infra.supervisor import supervised

ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }"
CONNECT = "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { edgeId } }"
PUBLISH = "mutation($i: PublishWorkflowInput!) { publishWorkflow(input: $i) { versionNumber } }"
START = "mutation($i: StartExecutionInput!) { startExecution(input: $i) { executionId } }"
TOPIC = "command_side.execution.aggregate:Execution."
FINISHED = TOPIC + "ExecutionFinished"
#: trigger.manual → data.transform → data.transform, templates on the inputs and the last step.
PAIR = {
    "t1": {"n": "{{ inputs.n * 2 }}", "who": "{{ inputs.who }}"},
    "t2": {"text": "{{ steps.t1.output.n }} for {{ steps.t1.output.who }}"},
}
#: Six transforms in a row, each adding one to the previous step's number.
CHAIN = {f"s{k}": {"n": f"{{{{ steps.s{k - 1}.output.n + 1 }}}}"} for k in range(2, 7)}
CHAIN = {"s1": {"n": "{{ inputs.n + 1 }}"}, **CHAIN}


@dataclass
class Timeline:
    """One execution's stored events as (type, epoch seconds, data)."""

    events: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)

    def at(self, kind: str) -> list[float]:
        return [t for k, t, _ in self.events if k == kind]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [d for k, _, d in self.events if k == "StepSucceeded"]

    def gaps(self) -> list[float]:
        """Runner finish of step k → runner start of step k+1."""
        s = self.steps
        return [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(s)]

    def stages(self) -> dict[str, list[float]]:
        """Where an execution's time goes, stage by stage (seconds)."""
        out: dict[str, list[float]] = {}
        scheduled, succeeded = self.at("StepScheduled"), self.at("StepSucceeded")
        if not (scheduled and self.at("ExecutionFinished")):
            return out
        add = out.setdefault
        add("started → admitted (orchestrator reads it)", []).append(
            self.at("ExecutionAdmitted")[0] - self.at("ExecutionStarted")[0]
        )
        add("admitted → first step scheduled", []).append(
            scheduled[0] - self.at("ExecutionAdmitted")[0]
        )
        for when, step, recorded in zip(scheduled, self.steps, succeeded, strict=True):
            add("scheduled → runner starts (commit, relay, Kafka)", []).append(
                step["started_at"] - when
            )
            add("runner runs the step", []).append(step["finished_at"] - step["started_at"])
            add("runner finishes → orchestrator records", []).append(recorded - step["finished_at"])
        for recorded, when in zip(succeeded, scheduled[1:], strict=False):
            add("recorded → next step scheduled", []).append(when - recorded)
        add("last step recorded → finished", []).append(
            self.at("ExecutionFinished")[0] - succeeded[-1]
        )
        add("total (started → finished)", []).append(
            self.at("ExecutionFinished")[0] - self.at("ExecutionStarted")[0]
        )
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
        while (done := self.finished(ids)) < len(ids):
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
            out.setdefault(eid, Timeline()).events.append(
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


async def publish(http: httpx.AsyncClient, transforms: dict[str, dict[str, str]]) -> str:
    """A published workflow: trigger.manual, then the transforms in a row."""
    created = await gql(http, 'mutation { createWorkflow(input: {name: "b"}) { workflowId } }', {})
    wid = str(created["createWorkflow"]["workflowId"])  # type: ignore[index]
    nodes = [
        ("start", "trigger.manual", {}),
        *((n, "data.transform", {"fields": f}) for n, f in transforms.items()),
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
    `in_flight` requests outstanding."""
    ids: list[str] = []
    numbers = iter(range(n))
    https = [client(url, token, in_flight) for _ in range(clients)]

    async def worker(http: httpx.AsyncClient) -> None:
        for i in numbers:
            ids.append(await start(http, wid, i))

    first = time.time()
    await asyncio.gather(*(worker(h) for h in https for _ in range(in_flight)))
    last = time.time()
    for h in https:
        await h.aclose()
    return Burst(ids, first, last)


async def one_at_a_time(
    http: httpx.AsyncClient, events: Events, wid: str, until: asyncio.Event | int
) -> list[str]:
    """Chain executions, each started when the one before has finished."""
    ids: list[str] = []
    for i in itertools.count():
        if until.is_set() if isinstance(until, asyncio.Event) else i >= until:
            return ids
        ids.append(await start(http, wid, i))
        await events.wait(ids[-1:], timeout=30, every=0.003)
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
) -> tuple[Burst, list[str]]:
    """A burst of n pair executions, with chain executions run one at a time beside it."""
    loaded = asyncio.Event()
    async with client(url, token) as http:
        side = asyncio.create_task(one_at_a_time(http, events, chain, loaded))
        started = await burst(url, token, pair, n, clients, in_flight)
        await events.wait(started.ids, timeout=150)
        loaded.set()
        return started, await side


def ms(values: Iterable[float]) -> str:
    v = [x * 1000 for x in values]
    return f"{percentile(v, 50):7.1f} {percentile(v, 90):7.1f} {percentile(v, 99):7.1f} {len(v):6}"


def merged(timelines: list[Timeline]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in timelines:
        for stage, values in t.stages().items():
            out.setdefault(stage, []).extend(values)
    return out


def run(
    n: int = 2000, backlog: int = 1000, chains: int = 200, clients: int = 4, in_flight: int = 8
) -> str:
    with services() as svc:
        settings = settings_for(svc)
        events = Events(svc.database_url)
        with platform(settings):  # relay, projector, api: no orchestrator, no runner yet
            url = f"http://127.0.0.1:{settings.api_port}"
            token = asyncio.run(signed_up(url))

            async def workflows() -> tuple[str, str]:
                async with client(url, token) as http:
                    return await publish(http, PAIR), await publish(http, CHAIN)

            pair, chain = asyncio.run(workflows())
            alone = asyncio.run(burst(url, token, pair, backlog, clients, in_flight))
            with supervised(settings, ("orchestrator", "runner")):
                asyncio.run(events.wait(alone.ids, timeout=120))

                async def idle() -> list[str]:
                    async with client(url, token) as http:
                        return await one_at_a_time(http, events, chain, chains)

                idle_ids = asyncio.run(idle())
                args = (url, token, events, pair, chain, n, clients, in_flight)
                loaded, side_ids = asyncio.run(under_load(*args))
        drained = events.timelines(alone.ids)
        idle_runs = events.timelines(idle_ids)
        load_runs = events.timelines(loaded.ids)
        side_runs = events.timelines(side_ids)
        events.close()
    first_admit = min(t.at("ExecutionAdmitted")[0] for t in drained)
    drain_rate = backlog / (max(t.at("ExecutionFinished")[0] for t in drained) - first_admit)
    load_end = max(t.at("ExecutionFinished")[0] for t in load_runs)
    e2e_rate = n / (load_end - loaded.first_sent)
    during = [
        t
        for t in side_runs
        if t.at("ExecutionStarted")[0] >= loaded.first_sent
        and t.at("ExecutionFinished")[0] <= load_end
    ]
    idle_gaps = [g for t in idle_runs for g in t.gaps()]
    load_gaps = [g for t in during for g in t.gaps()]
    pair_gaps = [g for t in load_runs for g in t.gaps()]
    idle_stages, load_stages = merged(idle_runs), merged(load_runs)
    lines = [
        f"# {os.cpu_count()} cpus, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"executions: trigger.manual → data.transform → data.transform, {clients} clients × {in_flight} in flight",
        f"  api alone (relay + projector, no orchestrator/runner), {backlog} starts  {alone.start_rate:8.0f} starts/s",
        f"  orchestrator + runner draining that backlog           {drain_rate:8.0f} exec/s",
        f"  end to end, {n} started → all SUCCEEDED              {e2e_rate:8.0f} exec/s   (target ≥ 250)",
        f"  starts answered meanwhile                           {loaded.start_rate:8.0f} starts/s",
        "step → step: runner finish k → runner start k+1, ms         p50     p90     p99      n",
        f"  6-transform chain, one at a time ({len(idle_runs)} runs)              {ms(idle_gaps)}",
        f"  6-transform chain, one at a time under the load ({len(during)} runs)   {ms(load_gaps)}",
        f"  t1 → t2 of the load's own executions                      {ms(pair_gaps)}",
        "stages, ms (p50 p90 p99 n): idle chain | under load (pair)",
    ]
    for stage, values in load_stages.items():
        idle_part = ms(idle_stages[stage]) if stage in idle_stages else ""
        lines.append(f"  {stage:52} {idle_part} | {ms(values)}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
