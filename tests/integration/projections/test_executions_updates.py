"""`executionUpdates` on real PostgreSQL: an execution's events from its event store (not the
read model), gapless from `afterVersion`, live as they are appended, public data only, for
the execution's workspace only, ending after ExecutionFinished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate, event

from command_side.execution.store import ExecutionStore
from infra.settings import eventsourcing_env_for, load_settings
from web.auth import Principal
from web.graphql.schema import build_schema
from web.tail import EventTail

WS = "ws-updates"
OTHER_WS = "ws-elsewhere"
SECRET_TASK = {"credentials": {"api": {"kind": "http_bearer", "ciphertext": "gAAAA-secret"}}}


class Execution(Aggregate):
    """A stand-in that records events of docs/execution.md as given (the real aggregate is
    being rewritten; the subscription only reads what the store holds)."""

    @staticmethod
    def create_id(execution_id: UUID, **_: Any) -> UUID:
        return execution_id

    @event("ExecutionStarted")
    def __init__(
        self,
        execution_id: UUID,
        workflow_id: str,
        workflow_version: int,
        trigger: dict[str, Any],
        inputs: dict[str, Any],
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.workspace_id = workspace_id

    @event("ExecutionAdmitted")
    def admit(self, actor_id: str, workspace_id: str) -> None:
        pass

    @event("StepScheduled")
    def schedule(
        self,
        node_id: str,
        node_type: str,
        attempt: int,
        not_before: float,
        input: dict[str, Any],
        pool: str | None,
        task: dict[str, Any] | None,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        pass

    @event("StepSucceeded")
    def succeed(
        self,
        node_id: str,
        attempt: int,
        output: Any,
        runner_id: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        pass

    @event("ExecutionFinished")
    def finish(
        self, status: str, error: str | None, output: Any, actor_id: str, workspace_id: str
    ) -> None:
        pass


class Credential(Aggregate):
    @event("CredentialCreated")
    def __init__(
        self, name: str, kind: str, ciphertext: str, actor_id: str, workspace_id: str
    ) -> None:
        pass


def begin(store: ExecutionStore, workspace: str = WS) -> Execution:
    run = Execution(
        execution_id=uuid4(),
        workflow_id=str(uuid4()),
        workflow_version=1,
        trigger={"kind": "manual"},
        inputs={"n": 1},
        actor_id="u1",
        workspace_id=workspace,
    )
    run.admit("u1", workspace)
    store.save(run)
    return run


def run_step(store: ExecutionStore, run: Execution, node_id: str = "fetch") -> None:
    run.schedule(node_id, "http.request", 1, 0.0, {"url": "https://x"}, "default", SECRET_TASK,
                 "orchestrator", run.workspace_id)  # fmt: skip
    run.succeed(node_id, 1, {"status": 200}, "host:1", "orchestrator", run.workspace_id)
    store.save(run)


def finish(store: ExecutionStore, run: Execution) -> None:
    run.finish("SUCCEEDED", None, {"done": True}, "orchestrator", run.workspace_id)
    store.save(run)


class NoRevocations:
    async def check(self, principal: Principal) -> str | None:
        return None


@dataclass
class TailServices:
    """What the subscription uses of the api's services."""

    execution_tail: EventTail
    revocations: NoRevocations = field(default_factory=NoRevocations)


@pytest.fixture
async def tailed(database_url: str) -> AsyncIterator[tuple[ExecutionStore, EventTail]]:
    store = ExecutionStore(env=eventsourcing_env_for(database_url))
    tail = EventTail(store, database_url, poll_interval_s=0.05, context="execution")
    await tail.start()
    yield store, tail
    await tail.close()
    store.close()


UPDATES = """subscription($id: ID!, $after: Int!) {
  executionUpdates(executionId: $id, afterVersion: $after)
  { executionId type version status nodeId attempt occurredAt data } }"""


async def subscribe(
    tail: EventTail, execution_id: object, after: int = 0, workspace: str = WS
) -> AsyncIterator[Any]:
    principal = Principal("u1", workspace, "viewer", "s", 0, 4_000_000_000.0)
    context = {
        "services": TailServices(tail),
        "principal": principal,
        "request": object(),  # authenticated already
    }
    result = await build_schema(load_settings({})).subscribe(
        UPDATES, {"id": str(execution_id), "after": after}, context_value=context
    )
    assert not hasattr(result, "errors"), result
    return result  # type: ignore[return-value]


async def collect(updates: AsyncIterator[Any], timeout: float = 10) -> list[dict[str, Any]]:
    """Every update until the subscription ends; errors end it too (raised)."""

    async def all_of() -> list[dict[str, Any]]:
        out = []
        async for result in updates:
            assert not result.errors, result.errors
            out.append(result.data["executionUpdates"])
        return out

    return await asyncio.wait_for(all_of(), timeout)


async def test_a_subscriber_gets_every_event_live_and_the_stream_ends_when_it_finishes(
    tailed: tuple[ExecutionStore, EventTail],
) -> None:
    store, tail = tailed
    run = await asyncio.to_thread(begin, store)
    updates = await subscribe(tail, run.id)
    received = asyncio.create_task(collect(updates))
    await asyncio.sleep(0.2)  # caught up and waiting for news
    await asyncio.to_thread(run_step, store, run)
    await asyncio.sleep(0.1)
    await asyncio.to_thread(finish, store, run)
    got = await received
    assert [(u["version"], u["type"], u["status"]) for u in got] == [
        (1, "ExecutionStarted", "QUEUED"),
        (2, "ExecutionAdmitted", "RUNNING"),
        (3, "StepScheduled", None),
        (4, "StepSucceeded", None),
        (5, "ExecutionFinished", "SUCCEEDED"),
    ]
    assert {u["executionId"] for u in got} == {str(run.id)}
    scheduled = got[2]
    assert (scheduled["nodeId"], scheduled["attempt"]) == ("fetch", 1)
    assert scheduled["data"]["input"] == {"url": "https://x"} and "task" not in scheduled["data"]
    assert "gAAAA-secret" not in repr(got)
    assert got[4]["data"]["output"] == {"done": True}


async def test_a_resubscriber_gets_what_followed_its_last_version(
    tailed: tuple[ExecutionStore, EventTail],
) -> None:
    store, tail = tailed
    run = await asyncio.to_thread(begin, store)
    await asyncio.to_thread(run_step, store, run)
    await asyncio.to_thread(finish, store, run)
    got = await collect(await subscribe(tail, run.id, after=3))
    assert [u["version"] for u in got] == [4, 5]
    assert await collect(await subscribe(tail, run.id, after=5)) == []  # seen it all: ends


async def test_only_the_executions_workspace_may_watch_it(
    tailed: tuple[ExecutionStore, EventTail],
) -> None:
    store, tail = tailed
    run = await asyncio.to_thread(begin, store)
    credential = Credential("api", "http_bearer", "gAAAA-secret", "u1", WS)
    await asyncio.to_thread(store.save, credential)
    for execution_id, workspace in (
        (run.id, OTHER_WS),
        (uuid4(), WS),
        ("not-an-id", WS),
        (credential.id, WS),  # an aggregate of the same store that is no execution
    ):
        updates = await subscribe(tail, execution_id, workspace=workspace)
        results = [r async for r in updates]
        codes = [(e.extensions or {}).get("code") for r in results for e in r.errors or []]
        assert codes == ["NOT_FOUND"], (execution_id, workspace)
        assert "gAAAA-secret" not in repr(results)
