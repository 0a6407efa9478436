"""kill -9 of the orchestrator, the runner and the relay while workflows run: every
execution still reaches exactly one terminal state, no step's side effect runs twice when its
first attempt had finished and reported, and every cancel reaches its running step."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import redis

from command_side.execution.store import ExecutionStore
from infra import embedded
from infra.settings import Settings, eventsourcing_env_for
from tests import services
from tests.api_server import ApiServer, running_api_server
from tests.execution_client import CANCEL, build, failure, start, steps_of, wait_for
from tests.execution_client import execution as read_execution
from tests.graphql_client import GraphQLClient
from tests.kafka_read import read_topic_raw
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import eventually, wait_until

PROCESSES = ("relay", "projector", "orchestrator", "runner", "api")
MANUAL = ("trigger.manual", {})


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    with running_api_server() as server:
        yield server


def crash_settings(database: str, bootstrap: str, redis_url: str, data_dir: Path) -> Settings:
    """A stack that notices lost runners and lost tasks within seconds."""
    return stack_settings(
        database,
        bootstrap,
        redis_db(redis_url),
        data_dir,
        AUTOOPS_STEP_HEARTBEAT_INTERVAL_S="0.5",
        AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S="3",
        # A step killed before its first heartbeat (50 ms) waits for this, not 2 minutes; a
        # task sent while the runner restarts (a few seconds on a slow host) is taken by the
        # new one within it, without an uncharged lapse for each second of the restart.
        AUTOOPS_STEP_QUEUE_TIMEOUT_S="8",
        AUTOOPS_KAFKA_GROUP_TIMEOUT_MS="2000",
    )


@pytest.fixture(scope="module")
def stack(
    pg_admin_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    # A broker of its own: members killed -9 here must not linger in the consumer groups the
    # other modules' stacks join on the session's broker.
    with services.kafka_broker() as broker, services.fresh_database(pg_admin_url) as database:
        settings = crash_settings(
            database, broker.url, redis_url, Path(tmp_path_factory.mktemp("stack"))
        )
        with running_stack(settings, PROCESSES) as running:
            running.wait_ready()
            yield running


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[GraphQLClient]:
    c = await GraphQLClient.signed_up(stack.url)
    yield c
    await c.close()


def kill(stack: Stack, name: str) -> int:
    """SIGKILL the orchestrator or the runner; its old pid. Returns once the supervisor's new
    one holds partitions again (its heartbeat: `assigned`), so that a kill after this one
    stops a process at work, not one still starting or joining its group, during which a
    step sent meanwhile has no runner and lapses again and again (past a step's free
    redeliveries, it is a poison task)."""
    assert name in ("orchestrator", "runner"), "only these report `assigned` in a heartbeat"
    proc = stack.supervisor.children[name]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(
        lambda: stack.supervisor.children[name].pid != proc.pid or None,
        30,
        f"{name} restarted",
    )
    client = redis.Redis.from_url(stack.settings.redis_url)
    try:
        wait_until(lambda: _at_work(client, name, stack), 60, f"the new {name} at work")
    finally:
        client.close()
    return proc.pid


def _at_work(
    client: redis.Redis,
    name: str,
    stack: Stack,
    working: Callable[[dict[str, Any]], bool] = lambda beat: beat.get("assigned", 0) > 0,
) -> bool:
    """Whether the supervisor's current `name` process says (`infra.heartbeat`) it works:
    by default, that it holds partitions."""
    pid = stack.supervisor.children[name].pid  # a restart that died starting was replaced
    keys = list(client.scan_iter(f"autoops:heartbeat:{name}*"))
    beats = [json.loads(raw) for raw in client.mget(keys) if raw] if keys else []
    return any(beat.get("pid") == pid and working(beat) for beat in beats)


async def test_a_runner_killed_mid_step_has_its_task_redelivered(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            # One attempt allowed: a killed runner's lapse is not charged against it.
            "slow": (
                "http.request",
                {"url": api.url + "/hold/killed", "retry": {"max_attempts": 1}},
            ),
        },
        [("start", "slow")],
    )
    execution_id = await start(client, workflow)
    assert await asyncio.to_thread(api.arrived["killed"].wait, 20)
    api.arrived["killed"].clear()  # before the kill: attempt 2 may come before it returns
    await asyncio.to_thread(kill, stack, "runner")
    assert await asyncio.to_thread(api.arrived["killed"].wait, 30)  # attempt 2 reached the API
    api.release["killed"].set()
    done = await wait_for(client, execution_id, timeout=30)
    assert done["status"] == "SUCCEEDED", failure(done)
    attempts = sorted(
        (s for s in done["steps"] if s["nodeId"] == "slow"), key=lambda s: s["attempt"]
    )
    assert [(s["attempt"], s["status"]) for s in attempts] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert attempts[0]["error"]["type"] == "HeartbeatTimeout"


async def test_kills_during_a_burst_leave_one_terminal_state_and_no_repeated_effect(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "one": (
                "http.request",
                {"method": "POST", "url": api.url + "/effect/{{ execution.id }}-one?ms=30"},
            ),
            "two": (
                "http.request",
                {"method": "POST", "url": api.url + "/effect/{{ execution.id }}-two?ms=30"},
            ),
            "three": ("data.transform", {"fields": {"done": True}}),
        },
        [("start", "one"), ("one", "two"), ("two", "three")],
    )
    ids = [await start(client, workflow) for _ in range(30)]
    rng = random.Random(4)
    for victim in ("orchestrator", "runner", "orchestrator", "runner"):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        await asyncio.to_thread(kill, stack, victim)
    ids += [await start(client, workflow) for _ in range(10)]
    finished = [await wait_for(client, i, timeout=90) for i in ids]
    assert Counter(e["status"] for e in finished) == {"SUCCEEDED": len(ids)}, [
        failure(e) for e in finished if e["status"] != "SUCCEEDED"
    ]
    redelivered = sum(1 for e in finished for s in e["steps"] if s["attempt"] > 1)
    print(f"steps redelivered after the kills: {redelivered}")
    for execution in finished:
        for node in ("one", "two"):
            attempts = [s for s in execution["steps"] if s["nodeId"] == node]
            calls = api.count(f"{execution['id']}-{node}")
            if len(attempts) == 1:
                assert calls == 1, (execution["id"], node, calls)  # reported once: ran once
            else:
                # Earlier attempts never reported: they lapsed or were handed back.
                assert all(
                    a["error"]["type"] in ("HeartbeatTimeout", "HandedBack")
                    for a in attempts
                    if a["status"] == "FAILED"
                ), attempts
                assert calls <= len(attempts)
    store = ExecutionStore(env=eventsourcing_env_for(stack.settings.database_url or ""))
    try:
        for execution_id in ids:
            events = store.repository.event_store.get(UUID(execution_id))
            kinds = Counter(type(e).__name__ for e in events)
            assert kinds["ExecutionFinished"] == 1, (execution_id, kinds)
    finally:
        store.close()


async def test_timers_outlive_orchestrators_killed_while_they_wait(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    """A delay and a retry backoff are durable: each orchestrator that was waiting on one is
    killed, and its successor fires it: not before its time, and once."""
    api.fail_first["backoff"] = 1
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "wait": ("control.delay", {"seconds": 3}),
            "call": (
                "http.request",
                {
                    "url": api.url + "/flaky/backoff",
                    "retry": {"max_attempts": 2, "initial_interval_s": 3},
                },
            ),
            "after": ("data.transform", {"fields": {"done": True}}),
        },
        [("start", "wait"), ("wait", "call"), ("call", "after")],
    )
    execution_id = await start(client, workflow)

    async def waiting() -> bool | None:
        current = await read_execution(client, execution_id)
        return (current is not None and "wait" in steps_of(current)) or None

    await eventually(waiting, 20, "the delay began")
    await asyncio.to_thread(kill, stack, "orchestrator")  # while the delay waits
    await asyncio.to_thread(wait_until, lambda: api.count("backoff") == 1 or None, 30, "call 1")
    await asyncio.to_thread(kill, stack, "orchestrator")  # while the retry backs off
    done = await wait_for(client, execution_id, timeout=60)
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = sorted(done["steps"], key=lambda s: (s["nodeId"], s["attempt"]))
    delay = next(s for s in steps if s["nodeId"] == "wait")
    assert seconds(delay["finishedAt"]) - seconds(delay["scheduledAt"]) >= 3
    calls = [s for s in steps if s["nodeId"] == "call"]
    assert [(s["attempt"], s["status"]) for s in calls] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert seconds(calls[1]["startedAt"]) - seconds(calls[0]["finishedAt"]) >= 3
    assert api.count("backoff") == 2


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def test_a_step_failed_for_good_is_dead_lettered_with_its_error(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "poison": (
                "http.request",
                {"url": api.url + "/missing/poison", "retry": {"max_attempts": 2}},
            ),
        },
        [("start", "poison")],
    )
    execution_id = await start(client, workflow)
    done = await wait_for(client, execution_id)
    assert done["status"] == "FAILED"
    assert steps_of(done)["poison"]["error"]["type"] == "HttpStatusError"
    assert stack.settings.kafka_bootstrap

    def dead_letters() -> list[dict[str, object]] | None:
        found = [
            m
            for m in read_topic_raw(stack.settings.kafka_bootstrap or "", "autoops.runner.dlq")
            if m.get("execution_id") == execution_id
        ]
        return found or None

    (letter,) = wait_until(dead_letters, 20, "a dead letter")
    assert letter["error"]["type"] == "HttpStatusError"  # type: ignore[index]
    assert letter["task"]["node_id"] == "poison"  # type: ignore[index]


def cancelled_reports(stack: Stack, execution_ids: list[str]) -> set[str]:
    """The executions among these whose running step a runner reported stopped by a cancel."""
    results = read_topic_raw(stack.settings.kafka_bootstrap or "", "autoops.runner.results")
    return {
        str(r["execution_id"])
        for r in results
        if r.get("execution_id") in execution_ids
        and (r.get("error") or {}).get("type") == "Cancelled"  # type: ignore[union-attr]
    }


def relay_at_work(stack: Stack, killed: set[int]) -> subprocess.Popen[bytes] | None:
    """The supervisor's relay, once it is none of those killed and says (its heartbeat) it
    publishes: a kill then stops a relay at work, not one still starting."""
    proc = stack.supervisor.children["relay"]
    if proc.pid in killed:  # its last heartbeat outlives it
        return None
    client = redis.Redis.from_url(stack.settings.redis_url or "")
    try:
        up = _at_work(client, "relay", stack, lambda beat: beat.get("kafka") == "up")
    finally:
        client.close()
    return proc if up else None


async def test_cancels_reach_their_running_steps_across_relay_kills(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    """The relay carries cancels to the runners (the control topic): one killed between
    sending a cancel and recording that it did, or before sending it, sends it again."""
    workflow = await build(
        client,
        {"start": MANUAL, "hold": ("http.request", {"url": api.url + "/hold/{{ execution.id }}"})},
        [("start", "hold")],
    )
    ids = [await start(client, workflow) for _ in range(6)]
    try:
        for execution_id in ids:
            assert await asyncio.to_thread(api.arrived[execution_id].wait, 30), execution_id
        # Three kills of a relay at work, each right after two cancels (wherever its batch is
        # then), all well within the API's 30 s hold (the supervisor's back-off: 1, 2, 4 s).
        killed: set[int] = set()
        for pair in (ids[0:2], ids[2:4], ids[4:6]):
            relay = await asyncio.to_thread(
                wait_until, lambda: relay_at_work(stack, killed), 30, "a relay at work"
            )
            for execution_id in pair:
                answer = await client.execute(CANCEL, {"i": {"executionId": execution_id}})
                assert answer["cancelExecution"]["status"] == "CANCELLED"
            os.kill(relay.pid, signal.SIGKILL)
            await asyncio.to_thread(relay.wait)
            killed.add(relay.pid)
        await asyncio.to_thread(
            wait_until,
            lambda: cancelled_reports(stack, ids) == set(ids) or None,
            30,
            "every running step stopped by its cancel",
            0.5,
        )
    finally:
        for execution_id in ids:
            api.release[execution_id].set()
    for execution_id in ids:
        done = await wait_for(client, execution_id)
        assert done["status"] == "CANCELLED", failure(done)


async def test_two_orchestrators_share_the_executions(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    import threading

    from command_side.execution.orchestrator import Orchestrator
    from infra.bootstrap import orchestrator_config

    workflow = await build(
        client,
        {
            "start": MANUAL,
            "one": (
                "http.request",
                {"method": "POST", "url": api.url + "/effect/{{ execution.id }}-pair"},
            ),
            "two": ("data.transform", {"fields": {"done": True}}),
        },
        [("start", "one"), ("one", "two")],
    )
    second = Orchestrator(orchestrator_config(stack.settings))
    stop = threading.Event()
    thread = threading.Thread(target=second.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(second.ready.wait, 30)
        ids = [await start(client, workflow) for _ in range(40)]
        finished = [await wait_for(client, i, timeout=60) for i in ids]
        assert Counter(e["status"] for e in finished) == {"SUCCEEDED": 40}
        assert all(api.count(f"{i}-pair") == 1 for i in ids)
        assert second.saves > 0  # it took its share of the partitions
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
    assert not thread.is_alive()  # it left the group: the next stack's orchestrator joins at once
    after = await start(client, workflow)  # the first one alone again
    assert (await wait_for(client, after, timeout=60))["status"] == "SUCCEEDED"


async def test_executions_survive_a_broker_that_restarts_empty(
    pg_admin_url: str, redis_url: str, tmp_path: Path, api: ApiServer
) -> None:
    """Tansu keeps nothing: a restart loses every topic, message and committed offset. Steps
    in flight when it went away, and executions started after, still finish, each once."""
    with services.kafka_broker() as first, services.fresh_database(pg_admin_url) as database:
        port = int(first.url.rsplit(":", 1)[1])
        settings = crash_settings(database, first.url, redis_url, tmp_path)
        with running_stack(settings, PROCESSES) as stack:
            stack.wait_ready()
            client = await GraphQLClient.signed_up(stack.url)
            try:
                workflow = await build(
                    client,
                    {
                        "start": MANUAL,
                        "one": (
                            "http.request",
                            {
                                "method": "POST",
                                "url": api.url + "/effect/{{ execution.id }}?ms=300",
                            },
                        ),
                        "two": ("data.transform", {"fields": {"done": True}}),
                    },
                    [("start", "one"), ("one", "two")],
                )
                warm = await wait_for(client, await start(client, workflow), timeout=60)
                assert warm["status"] == "SUCCEEDED", failure(warm)
                before = [await start(client, workflow) for _ in range(5)]
                first.stop()  # while their steps run
                second = await asyncio.to_thread(embedded.start_tansu, port)
                try:
                    after = [await start(client, workflow) for _ in range(5)]
                    finished = [await wait_for(client, i, timeout=90) for i in before + after]
                    assert Counter(e["status"] for e in finished) == {"SUCCEEDED": 10}, [
                        ("before" if e["id"] in before else "after", failure(e))
                        for e in finished
                        if e["status"] != "SUCCEEDED"
                    ]
                    for execution in finished:
                        ones = [s for s in execution["steps"] if s["nodeId"] == "one"]
                        calls = api.count(execution["id"])
                        if len(ones) == 1:
                            assert calls == 1  # reported once: ran once
                        else:  # lost tasks went again as new attempts, never twice each
                            assert 1 <= calls <= len(ones), (execution["id"], calls, ones)
                finally:
                    second.stop()
            finally:
                await client.close()
