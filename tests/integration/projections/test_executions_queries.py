"""Reading executions back: the query-side views and the GraphQL fields over rows the fold
produced, as the api's reader role (row-level security on)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore
from infra.settings import eventsourcing_env_for, load_settings
from projections.schema import READER_ROLE
from query_side import execution_views, views
from query_side.errors import BadCursor
from query_side.views import encode_cursor
from tests.integration.projections.test_executions_projection import (
    CHILD,
    EARLIER,
    OTHER_WS,
    RUN,
    WORKFLOW,
    WS,
    all_stories,
    at,
    envelope,
    fold,
    started,
)
from web.auth import Principal
from web.graphql.schema import build_schema
from web.services import scoped
from web.tail import EventTail

SECOND_WORKFLOW = "44444444-4444-4444-4444-444444444444"
FOREIGN_WORKFLOW = "55555555-5555-5555-5555-555555555555"


def numbered(n: int) -> UUID:
    return UUID(int=0xC0DE0000 + n)


def more_runs() -> list[dict[str, Any]]:
    """Five more executions of the workspace, one a second after the other: even ones of the
    second workflow, the last two still queued."""
    story = []
    for n in range(5):
        eid = numbered(n)
        workflow = SECOND_WORKFLOW if n % 2 == 0 else WORKFLOW
        story.append(started(eid, 100 + n, workflow_id=workflow))
        if n < 3:
            story.append(envelope(eid, 2, "ExecutionAdmitted", {}, 100.5 + n))
            finished = {"status": "SUCCEEDED", "error": None, "output": {"n": n}}
            story.append(envelope(eid, 3, "ExecutionFinished", finished, 100.7 + n))
    return story


@pytest.fixture
def read_models(database_url: str) -> str:
    fold(database_url, all_stories() + more_runs())
    with psycopg.connect(database_url) as conn:
        for workflow, workspace in (
            (WORKFLOW, WS),
            (SECOND_WORKFLOW, WS),
            (FOREIGN_WORKFLOW, OTHER_WS),
        ):
            conn.execute(
                "INSERT INTO read.workflows (id, workspace_id, name, version, created_at,"
                " created_by, updated_at, updated_by) VALUES (%s, %s, 'w', 1, now(), 'x',"
                " now(), 'x')",
                (workflow, workspace),
            )
    return database_url


@pytest.fixture
async def pool(read_models: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async def as_reader(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(f"SET ROLE {READER_ROLE}")

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        read_models,
        min_size=1,
        max_size=2,
        open=False,
        kwargs={"autocommit": True},
        configure=as_reader,
    )
    await pool.open(wait=True)
    yield pool
    await pool.close()


# -- views ----------------------------------------------------------------------------------


async def test_executions_are_listed_newest_first_page_by_page(
    pool: AsyncConnectionPool[Any],
) -> None:
    seen: list[UUID] = []
    after = None
    async with scoped(pool, WS) as conn:
        while True:
            page = await execution_views.list_executions(conn, WS, first=2, after=after)
            seen += [r["id"] for r in page.rows]
            if not page.has_next:
                break
            after = page.end_cursor
    assert seen == [numbered(n) for n in reversed(range(5))] + [CHILD, RUN]


async def test_executions_filter_by_workflow_and_status(pool: AsyncConnectionPool[Any]) -> None:
    async with scoped(pool, WS) as conn:
        second = await execution_views.list_executions(conn, WS, UUID(SECOND_WORKFLOW))
        queued = await execution_views.list_executions(conn, WS, status="QUEUED")
        both = await execution_views.list_executions(conn, WS, UUID(SECOND_WORKFLOW), "SUCCEEDED")
    assert [r["id"] for r in second.rows] == [numbered(4), numbered(2), numbered(0)]
    assert [r["id"] for r in queued.rows] == [numbered(4), numbered(3)]
    assert [r["id"] for r in both.rows] == [numbered(2), numbered(0)]


async def test_a_cursor_not_handed_out_is_refused(pool: AsyncConnectionPool[Any]) -> None:
    async with scoped(pool, WS) as conn:
        forged = [
            encode_cursor("not a time", numbered(1)),  # used to reach SQL's cast: INTERNAL
            encode_cursor("99999-01-01T00:00:00+00:00", numbered(1)),
            encode_cursor("2026-12-06T00:00:00", numbered(1)),  # no zone
            base64.urlsafe_b64encode(b"[" * 50_000 + b"]" * 50_000).decode(),
        ]
        for cursor in ("nonsense", "WyJ4Il0=", *forged):
            with pytest.raises(BadCursor):
                await execution_views.list_executions(conn, WS, after=cursor)
        for version in ("²", "-1", "x"):
            with pytest.raises(BadCursor):
                await views.history(conn, WS, UUID(WORKFLOW), after=encode_cursor(version))
        with pytest.raises(BadCursor):
            await execution_views.list_executions(conn, WS, first=0)


async def test_an_execution_comes_with_its_steps_in_schedule_order(
    pool: AsyncConnectionPool[Any],
) -> None:
    async with scoped(pool, WS) as conn:
        execution = await execution_views.get_execution(conn, WS, RUN)
    assert execution is not None and execution["status"] == "FAILED"
    order = [(s["node_id"], s["attempt"]) for s in execution["steps"]]
    assert order == [
        ("old", 0), ("fetch", 1), ("fetch", 2), ("check", 1), ("later", 0), ("each", 1)
    ]  # fmt: skip


async def test_another_workspace_sees_neither_executions_nor_credentials(
    pool: AsyncConnectionPool[Any],
) -> None:
    async with scoped(pool, OTHER_WS) as conn:
        assert await execution_views.get_execution(conn, OTHER_WS, RUN) is None
        assert await execution_views.get_execution(conn, WS, RUN) is None  # RLS, not WHERE
        listed = await execution_views.list_executions(conn, WS)
        assert listed.rows == []
        names = await execution_views.credentials(conn, OTHER_WS)
    assert [(c["name"], c["kind"]) for c in names] == [("api", "openai")]


# -- GraphQL --------------------------------------------------------------------------------


@dataclass
class ReadServices:
    """What the execution queries use of the api's services."""

    pool: AsyncConnectionPool[Any]
    # The stores behind them: asked only about an id the read model lacks (these read models
    # were folded straight, so they hold nothing).
    tail: EventTail
    execution_tail: EventTail

    def reader(self, who: Any) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return scoped(self.pool, who.workspace_id, who.actor_id)


@pytest.fixture
def services(pool: AsyncConnectionPool[Any], read_models: str) -> Iterator[ReadServices]:
    env = eventsourcing_env_for(read_models)
    workflows, executions = WorkflowStore(env=env), ExecutionStore(env=env)
    yield ReadServices(
        pool,
        EventTail(workflows, read_models),
        EventTail(executions, read_models, context="execution"),
    )
    workflows.close()
    executions.close()


def context(services: ReadServices, workspace: str, role: str = "viewer") -> Any:
    principal = Principal("user-1", workspace, role, "session", 0, 4_000_000_000.0)
    # An HTTP request whose token was checked already.
    return {"services": services, "principal": principal, "request": object()}


async def graphql(
    services: ReadServices, query: str, workspace: str = WS, role: str = "viewer", **v: Any
) -> tuple[dict[str, Any] | None, list[str]]:
    result = await build_schema(load_settings({})).execute(
        query, v, context_value=context(services, workspace, role)
    )
    codes = [(e.extensions or {}).get("code", "") for e in result.errors or []]
    return result.data, codes


EXECUTION = """query($id: ID!) { execution(id: $id) {
  id workflowId workflowVersion status trigger inputs output error createdAt startedAt
  finishedAt parentId retryOf
  steps { nodeId nodeType attempt status input output branch error { type message retryable }
          scheduledAt startedAt finishedAt durationMs runnerId } } }"""
EXECUTIONS = """query($w: ID, $s: ExecutionStatus, $first: Int!, $after: String) {
  executions(workflowId: $w, status: $s, first: $first, after: $after) {
    nodes { id status workflowId } pageInfo { hasNextPage endCursor } } }"""


async def test_the_execution_field_answers_the_run_and_its_steps(
    services: ReadServices,
) -> None:
    data, codes = await graphql(services, EXECUTION, id=str(RUN))
    assert codes == [] and data is not None
    run = data["execution"]
    assert run["status"] == "FAILED" and run["workflowId"] == WORKFLOW
    assert run["retryOf"] == str(EARLIER) and run["parentId"] is None
    assert datetime.fromisoformat(run["createdAt"]) == at(0)
    assert datetime.fromisoformat(run["finishedAt"]) == at(65)
    fetch = [s for s in run["steps"] if s["nodeId"] == "fetch"]
    assert [(s["attempt"], s["status"]) for s in fetch] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert fetch[0]["error"] == {
        "type": "HttpStatusError",
        "message": "GET https://example.com answered 503",
        "retryable": True,
    }
    assert fetch[0]["durationMs"] == 250 and fetch[1]["durationMs"] == 500
    assert fetch[1]["runnerId"] == "host:2" and fetch[1]["output"] == {"status": 200}
    skipped = next(s for s in run["steps"] if s["nodeId"] == "later")
    assert (skipped["status"], skipped["attempt"], skipped["durationMs"]) == ("SKIPPED", 0, None)


async def test_an_execution_of_another_workspace_does_not_exist(
    services: ReadServices,
) -> None:
    for execution_id in (str(RUN), "not-an-id"):
        data, codes = await graphql(services, EXECUTION, OTHER_WS, id=execution_id)
        assert codes == ["NOT_FOUND"] and data == {"execution": None}


async def test_the_executions_field_pages_and_filters(services: ReadServices) -> None:
    data, codes = await graphql(services, EXECUTIONS, first=4)
    assert codes == [] and data is not None
    page = data["executions"]
    assert [n["id"] for n in page["nodes"]] == [str(numbered(n)) for n in (4, 3, 2, 1)]
    assert page["pageInfo"]["hasNextPage"] is True
    data, _ = await graphql(services, EXECUTIONS, first=4, after=page["pageInfo"]["endCursor"])
    assert data is not None
    assert [n["id"] for n in data["executions"]["nodes"]] == [
        str(numbered(0)),
        str(CHILD),
        str(RUN),
    ]
    data, _ = await graphql(services, EXECUTIONS, first=20, w=WORKFLOW, s="SUCCEEDED")
    assert data is not None
    assert [n["id"] for n in data["executions"]["nodes"]] == [str(numbered(1)), str(CHILD)]


async def test_executions_of_a_workflow_the_caller_cannot_see_do_not_exist(
    services: ReadServices,
) -> None:
    for workflow in (FOREIGN_WORKFLOW, "not-an-id"):
        _, codes = await graphql(services, EXECUTIONS, first=5, w=workflow)
        assert codes == ["NOT_FOUND"], workflow
    data, codes = await graphql(services, EXECUTIONS, OTHER_WS, first=5, w=FOREIGN_WORKFLOW)
    assert codes == [] and data == {
        "executions": {"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}
    }


async def test_listed_executions_bring_their_steps_only_when_asked(
    services: ReadServices,
) -> None:
    query = """query { executions(first: 50) { nodes { id
      ... on Execution { steps { nodeId attempt } } } } }"""
    data, codes = await graphql(services, query)
    assert codes == [] and data is not None
    by_id = {n["id"]: n["steps"] for n in data["executions"]["nodes"]}
    assert len(by_id[str(RUN)]) == 6 and by_id[str(numbered(0))] == []


async def test_credentials_are_names_and_kinds_for_editors_only(
    services: ReadServices,
) -> None:
    query = "{ credentials { name kind createdAt } }"
    data, codes = await graphql(services, query, role="editor")
    assert codes == [] and data is not None
    (credential,) = data["credentials"]
    assert (credential["name"], credential["kind"]) == ("api", "http_bearer")
    assert datetime.fromisoformat(credential["createdAt"]) == at(0.5)
    _, codes = await graphql(services, query, role="viewer")
    assert codes == ["FORBIDDEN"]
