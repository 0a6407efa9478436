"""A backlog behind busy runners: steps that wait in their topic, however long, are not lost.
The orchestrator tells a task still waiting for a runner from one a runner took and lost by
the runners' committed offsets, not by time alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.api_server import ApiServer, running_api_server
from tests.execution_client import build, failure, start, wait_for
from tests.graphql_client import GraphQLClient
from tests.stack import Stack, redis_db, running_stack, stack_settings

#: A task never heard of counts as lost after this long, from its dispatch or from when it
#: was last found waiting (and a taken one after the heartbeat timeout without a word).
QUEUE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    with running_api_server() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    pg_admin_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with services.kafka_broker() as broker, services.fresh_database(pg_admin_url) as database:
        settings = stack_settings(
            database,
            broker.url,
            redis_db(redis_url),
            Path(tmp_path_factory.mktemp("stack")),
            # One step at a time: everything sent meanwhile waits in the topic.
            AUTOOPS_RUNNER_CONCURRENCY="1",
            AUTOOPS_STEP_HEARTBEAT_INTERVAL_S="0.4",
            AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S=str(QUEUE_TIMEOUT_S),
            AUTOOPS_STEP_QUEUE_TIMEOUT_S=str(QUEUE_TIMEOUT_S),
        )
        processes = ("relay", "projector", "orchestrator", "runner", "api")
        with running_stack(settings, processes) as running:
            running.wait_ready()
            yield running


async def test_steps_waiting_behind_a_busy_runner_run_once_however_long_they_wait(
    client: GraphQLClient, api: ApiServer
) -> None:
    manual = ("trigger.manual", {})
    busy = await build(
        client,
        {"start": manual, "hold": ("http.request", {"url": api.url + "/hold/backlog"})},
        [("start", "hold")],
    )
    queued = await build(
        client,
        {
            "start": manual,
            "call": ("http.request", {"url": api.url + "/effect/{{ inputs.n }}-backlog"}),
        },
        [("start", "call")],
    )
    holding = await start(client, busy)
    assert await asyncio.to_thread(api.arrived["backlog"].wait, 30)  # the only slot is taken
    waiting = [await start(client, queued, {"n": n}) for n in range(3)]
    # The time under test: several queue timeouts, each of which used to send every waiting
    # step again (a new attempt) until, past its free redeliveries, it failed for good.
    await asyncio.sleep(6 * QUEUE_TIMEOUT_S)
    api.release["backlog"].set()
    held = await wait_for(client, holding, timeout=30)
    assert held["status"] == "SUCCEEDED", failure(held)
    for n, execution_id in enumerate(waiting):
        done = await wait_for(client, execution_id, timeout=30)
        assert done["status"] == "SUCCEEDED", failure(done)
        assert [s["attempt"] for s in done["steps"] if s["nodeId"] == "call"] == [1]
        assert api.count(f"{n}-backlog") == 1
