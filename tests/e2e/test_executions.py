"""Workflows run: every node type and rule of the execution engine, through GraphQL on the
real stack (PostgreSQL, Tansu, Redis, orchestrator, runner), against a local HTTP API, the
test PostgreSQL as a customer database, and a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from infra import embedded
from tests import services
from tests.api_server import ApiServer, running_api_server
from tests.display import xvfb
from tests.execution_client import (
    ADD,
    CANCEL,
    CREDENTIAL,
    REPLAY,
    RETRY,
    build,
    failure,
    run,
    start,
    steps_of,
    wait_for,
)
from tests.graphql_client import GraphQLClient, GraphQLError
from tests.kafka_read import read_topic_raw
from tests.llm_server import LlmServer, running_llm_server
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import eventually, wait_until

PROCESSES = ("relay", "projector", "orchestrator", "scheduler", "runner", "runner:browser", "api")
MANUAL = ("trigger.manual", {})


@pytest.fixture(scope="module")
def llm() -> Iterator[LlmServer]:
    with running_llm_server() as server:
        yield server


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    with running_api_server() as server:
        yield server


@pytest.fixture(scope="module")
def display() -> Iterator[str | None]:
    """An X display for the desktop runner (None where Xvfb is missing: its tests skip)."""
    if not shutil.which("Xvfb"):
        yield None
        return
    with xvfb(1280, 800) as name:
        yield name


@pytest.fixture(scope="module")
def stack(
    pg_admin_url: str,
    kafka_session: embedded.Service,
    redis_url: str,
    llm: LlmServer,
    display: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with services.fresh_database(pg_admin_url) as database:
        settings = stack_settings(
            database,
            kafka_session.url,
            redis_db(redis_url),
            Path(tmp_path_factory.mktemp("stack")),
            AUTOOPS_STEP_HEARTBEAT_INTERVAL_S="0.5",
            AUTOOPS_STEP_HEARTBEAT_TIMEOUT_S="4",
            AUTOOPS_LLM_BASE_URL=llm.base_url,
            AUTOOPS_LLM_API_KEY="sk-test-default",
            AUTOOPS_OUTPUT_INLINE_LIMIT="2048",
            **({"AUTOOPS_DESKTOP_DISPLAY": display} if display else {}),
        )
        processes = (*PROCESSES, "runner:desktop") if display else PROCESSES
        with running_stack(settings, processes) as running:
            running.wait_ready()
            yield running


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[GraphQLClient]:
    c = await GraphQLClient.signed_up(stack.url)
    yield c
    await c.close()


async def test_a_chain_of_transforms_passes_data_from_step_to_step(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "double": ("data.transform", {"fields": {"n": "{{ inputs.n * 2 }}"}}),
            "label": (
                "data.transform",
                {
                    "fields": {
                        "text": "n is {{ steps.double.output.n }}",
                        "id": "{{ execution.id }}",
                    }
                },
            ),
        },
        [("start", "double"), ("double", "label")],
    )
    done = await run(client, workflow, {"n": 21})
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["double"]["output"] == {"n": 42}
    assert steps["label"]["output"]["text"] == "n is 42"
    assert steps["label"]["output"]["id"] == done["id"]
    assert done["output"] == {"label": steps["label"]["output"]}
    assert done["workflowVersion"] == 1
    # The orchestrator completes a transform as it renders it: no runner takes part.
    assert steps["double"]["runnerId"] is None and steps["double"]["startedAt"]
    assert steps["double"]["input"] == {"fields": {"n": 42}}
    assert steps["double"]["nodeType"] == "data.transform"


async def test_an_event_larger_than_a_kafka_message_runs_and_reads_back_whole(
    client: GraphQLClient,
) -> None:
    """600 kB of "é" as inputs is within the limit (1 MiB of JSON), but its ExecutionStarted
    envelope, with every "é" escaped, is about 1.8 MB: more than a Kafka message. It goes out
    with its inputs left in the store; the orchestrator needs none of them, the projector
    reads them from the store. Before, the relay retried that one message for ever, and no
    execution event of any workflow reached Kafka again."""
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "count": ("data.transform", {"fields": {"n": "{{ inputs.text | length }}"}}),
        },
        [("start", "count")],
    )
    text = "é" * 300_000
    done = await run(client, workflow, {"text": text}, timeout=60)
    assert done["status"] == "SUCCEEDED", failure(done)
    assert steps_of(done)["count"]["output"] == {"n": 300_000}
    assert done["inputs"] == {"text": text}
    after = await run(client, workflow, {"text": "é"})  # and the log goes on
    assert steps_of(after)["count"]["output"] == {"n": 1}


async def test_a_start_repeated_with_its_client_op_id_starts_nothing_twice(
    client: GraphQLClient,
) -> None:
    """A client that lost the answer to `startExecution` asks again with the same key: the
    first execution comes back (as it is now), and no second one runs."""
    workflow = await build(client, {"start": MANUAL}, [])
    first = await start(client, workflow, {"n": 1}, clientOpId="op-1")
    done = await wait_for(client, first)
    again = await client.execute(
        "mutation($i: StartExecutionInput!) { startExecution(input: $i) { executionId status } }",
        {"i": {"workflowId": workflow, "inputs": {"n": 1}, "clientOpId": "op-1"}},
    )
    assert again["startExecution"] == {"executionId": first, "status": done["status"]}
    other = await start(client, workflow, {"n": 1}, clientOpId="op-2")
    assert other != first
    elsewhere = await build(client, {"start": MANUAL}, [])
    with pytest.raises(GraphQLError) as reused:
        await start(client, elsewhere, {}, clientOpId="op-1")
    assert reused.value.codes == ["CONFLICT"]
    listed = await client.settled(
        "query($w: ID) { executions(workflowId: $w) { nodes { id } } }",
        {"w": workflow},
        lambda data: len(data["executions"]["nodes"]) >= 2,
        "both executions listed",
    )
    assert sorted(n["id"] for n in listed["executions"]["nodes"]) == sorted([first, other])


async def test_http_request_with_a_credential_retries_a_flaky_api(
    client: GraphQLClient, api: ApiServer
) -> None:
    await client.execute(
        CREDENTIAL,
        {"i": {"name": "api-token", "kind": "http_bearer", "secret": {"token": "s3cret-t0ken"}}},
    )
    api.fail_first["retried"] = 2
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "call": (
                "http.request",
                {
                    "url": api.url + "/flaky/retried",
                    "query": {"q": "{{ inputs.q }}"},
                    "auth": {"credential": "api-token"},
                    "retry": {"max_attempts": 3, "initial_interval_s": 0.1},
                },
            ),
        },
        [("start", "call")],
    )
    done = await run(client, workflow, {"q": "x"})
    assert done["status"] == "SUCCEEDED", failure(done)
    attempts = [s for s in done["steps"] if s["nodeId"] == "call"]
    assert [s["status"] for s in attempts] == ["FAILED", "FAILED", "SUCCEEDED"] or [
        s["status"].upper() for s in attempts
    ] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert steps_of(done)["call"]["output"]["status"] == 200
    seen = api.calls["retried"][-1]
    assert seen["headers"]["authorization"] == "Bearer s3cret-t0ken"
    assert seen["query"] == {"q": "x"}
    # The secret is nowhere in what GraphQL shows.
    assert "s3cret-t0ken" not in json.dumps(done)
    token = {"name": "api-token", "kind": "http_bearer"}
    listed = "{ credentials { name kind } }"
    await client.settled(listed, {}, lambda data: token in data["credentials"], "api-token")


async def test_branches_merge_and_stop(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "check": ("control.if", {"condition": "{{ inputs.n > 10 }}"}),
            "big": ("data.transform", {"fields": {"size": "big"}}),
            "small": ("data.transform", {"fields": {"size": "small"}}),
            "join": ("control.merge", {"mode": "any"}),
            "route": ("control.switch", {"value": "{{ inputs.kind }}", "cases": ["a", "b"]}),
            "on_a": ("data.transform", {"fields": {"case": "a"}}),
            "other": ("data.transform", {"fields": {"case": "default"}}),
            "end": (
                "control.stop",
                {"outcome": "succeed", "output": {"joined": "{{ steps.join.output }}"}},
            ),
        },
        [
            ("start", "check"),
            ("check", "big", "true"),
            ("check", "small", "false"),
            ("big", "join"),
            ("small", "join"),
            ("join", "route"),
            ("route", "on_a", "a"),
            ("route", "other", "default"),
            ("on_a", "end"),
        ],
    )
    done = await run(client, workflow, {"n": 50, "kind": "a"})
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["small"]["status"] == "SKIPPED" and steps["other"]["status"] == "SKIPPED"
    assert done["output"] == {"joined": {"big": {"size": "big"}}}
    other = await run(client, workflow, {"n": 1, "kind": "zzz"})
    steps = steps_of(other)
    assert steps["small"]["status"] == "SUCCEEDED" and steps["other"]["status"] == "SUCCEEDED"
    assert steps["end"]["status"] == "SKIPPED"


async def test_merge_all_waits_for_every_branch_and_non_retryable_errors_stop_retries(
    client: GraphQLClient, api: ApiServer
) -> None:
    retry = {"max_attempts": 3, "initial_interval_s": 0.1, "non_retryable": ["HttpStatusError"]}
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "fast": ("data.transform", {"fields": {"at": "fast"}}),
            "slow": ("http.request", {"url": api.url + "/effect/slow?ms=300"}),
            "both": ("control.merge", {"mode": "all"}),
            "flaky": (
                "http.request",
                {"url": api.url + "/flaky/gate", "retry": retry},
            ),
        },
        [("start", "fast"), ("start", "slow"), ("fast", "both"), ("slow", "both"),
         ("both", "flaky")],
    )  # fmt: skip
    api.fail_first["gate"] = 1
    done = await run(client, workflow)
    steps = steps_of(done)
    # `all`: the merge waited for the slow branch too, and outputs both.
    assert set(steps["both"]["output"]) == {"fast", "slow"}
    assert steps["both"]["output"]["slow"]["body"]["name"] == "slow"
    # A 503 is retryable by default; listed in non_retryable it fails at once.
    assert done["status"] == "FAILED" and steps["flaky"]["attempt"] == 1
    assert steps["flaky"]["error"]["type"] == "HttpStatusError"
    assert api.count("gate") == 1


async def test_a_failing_step_takes_its_error_edge(client: GraphQLClient, api: ApiServer) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "call": ("http.request", {"url": api.url + "/missing/x"}),
            "handled": ("data.transform", {"fields": {"why": "{{ steps.call.error.type }}"}}),
            "fail": ("control.stop", {"outcome": "fail", "message": "gave up on {{ inputs.who }}"}),
        },
        [("start", "call"), ("call", "handled", "error"), ("handled", "fail")],
    )
    done = await run(client, workflow, {"who": "bob"})
    assert done["status"] == "FAILED"
    assert done["error"] == "fail: gave up on bob"
    call = steps_of(done)["call"]
    assert call["error"]["type"] == "HttpStatusError" and not call["error"]["retryable"]
    assert call["attempt"] == 1  # a 404 is not retried
    assert steps_of(done)["handled"]["input"] == {"fields": {"why": "HttpStatusError"}}


async def test_a_loop_runs_its_body_per_item_and_collects_results(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "each": ("control.loop", {"items": "{{ inputs.rows }}", "concurrency": 2}),
            "square": ("data.transform", {"fields": {"sq": "{{ inputs.item * inputs.item }}"}}),
            "after": ("data.transform", {"fields": {"all": "{{ steps.each.output }}"}}),
        },
        [("start", "each"), ("each", "square", "body"), ("square", "each"), ("each", "after")],
    )
    done = await run(client, workflow, {"rows": [1, 2, 3, 4]})
    assert done["status"] == "SUCCEEDED", failure(done)
    results = steps_of(done)["each"]["output"]
    assert [r["square"]["sq"] for r in results] == [1, 4, 9, 16]


async def test_a_subworkflow_runs_and_returns_its_output(client: GraphQLClient) -> None:
    child = await build(
        client,
        {
            "start": MANUAL,
            "greet": ("data.transform", {"fields": {"hello": "hi {{ inputs.name }}"}}),
        },
        [("start", "greet")],
    )
    parent = await build(
        client,
        {
            "start": MANUAL,
            "call": (
                "control.subworkflow",
                {"workflow_id": child, "inputs": {"name": "{{ inputs.who }}"}},
            ),
            "use": ("data.transform", {"fields": {"said": "{{ steps.call.output.greet.hello }}"}}),
        },
        [("start", "call"), ("call", "use")],
    )
    done = await run(client, parent, {"who": "ann"})
    assert done["status"] == "SUCCEEDED", failure(done)
    assert steps_of(done)["use"]["output"] == {"said": "hi ann"}


async def test_a_subworkflow_past_its_timeout_times_out_and_its_child_is_cancelled(
    client: GraphQLClient, api: ApiServer
) -> None:
    child = await build(
        client,
        {"start": MANUAL, "slow": ("http.request", {"url": api.url + "/hold/slow-child"})},
        [("start", "slow")],
    )
    parent = await build(
        client,
        {
            "start": MANUAL,
            "call": ("control.subworkflow", {"workflow_id": child, "timeout_s": 1}),
        },
        [("start", "call")],
    )
    try:
        done = await run(client, parent)
        assert done["status"] == "TIMED_OUT", failure(done)
        assert steps_of(done)["call"]["error"]["type"] == "StepTimeout"
        listed = await client.settled(
            "query($w: ID) { executions(workflowId: $w, first: 5) { nodes { id status } } }",
            {"w": child},
            lambda data: len(data["executions"]["nodes"]) == 1,
            "the child execution listed",
        )
        (child_run,) = listed["executions"]["nodes"]
        stopped = await wait_for(client, child_run["id"])
        assert stopped["status"] == "CANCELLED", failure(stopped)
        assert "call ran longer than 1 s" in (stopped["error"] or ""), stopped["error"]
    finally:
        api.release["slow-child"].set()


async def test_a_published_body_runs_per_item_and_what_cannot_run_fails_its_step(
    client: GraphQLClient,
) -> None:
    integer = {"type": "integer"}
    body = await build(
        client,
        {
            "item": (
                "trigger.manual",
                {"inputs_schema": {"type": "object", "properties": {"item": integer}}},
            ),
            "double": ("data.transform", {"fields": {"d": "{{ inputs.item * 2 }}"}}),
        },
        [("item", "double")],
    )
    looping = await build(
        client,
        {
            "start": MANUAL,
            "a": ("data.transform", {"fields": {}}),
            "b": ("data.transform", {"fields": {}}),
        },
        [("start", "a"), ("a", "b"), ("b", "a")],
    )
    parent = await build(
        client,
        {
            "start": MANUAL,
            "each": (
                "control.loop",
                {"items": "{{ inputs.items }}", "body_workflow_id": body, "concurrency": 2},
            ),
        },
        [("start", "each")],
    )
    done = await run(client, parent, {"items": [1, 2, 3]})
    assert done["status"] == "SUCCEEDED", failure(done)
    assert steps_of(done)["each"]["output"] == [{"double": {"d": d}} for d in (2, 4, 6)]
    wrong = await run(client, parent, {"items": [1, "two"]})
    assert wrong["status"] == "FAILED"
    error = steps_of(wrong)["each"]["error"]
    assert error["type"] == "InputsInvalid" and "item 1's inputs.item" in error["message"]
    caller = await build(
        client,
        {"start": MANUAL, "call": ("control.subworkflow", {"workflow_id": looping})},
        [("start", "call")],
    )
    stuck = await run(client, caller)  # fails at once rather than waiting for ever
    assert stuck["status"] == "FAILED"
    error = steps_of(stuck)["call"]["error"]
    assert error["type"] == "WorkflowInvalid" and "cycle" in error["message"].lower(), error
    for refused in (wrong, stuck):  # the refusals are part of the record
        report = await client.execute(REPLAY, {"id": refused["id"]})
        assert report["replayExecution"]["deterministic"], report


async def test_filter_files_and_delay(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "floor": ("data.transform", {"fields": {"min": "{{ inputs.min }}"}}),
            "keep": (
                "data.filter",
                {
                    "items": "{{ inputs.rows }}",
                    # Rendered per item on the runner, with the inputs and the steps upstream.
                    "condition": "{{ steps.floor.output.min < item.n < inputs.max }}",
                },
            ),
            "save": (
                "file.write",
                {
                    "path": "out/kept.csv",
                    "format": "csv",
                    "content": "{{ steps.keep.output['items'] }}",
                },
            ),
            "save_json": (
                "file.write",
                {"path": "out/kept.json", "format": "json", "content": "{{ steps.keep.output }}"},
            ),
            "save_text": (
                "file.write",
                {"path": "out/note.txt", "format": "text", "content": "kept {{ inputs.max }}"},
            ),
            "wait": ("control.delay", {"seconds": 0.3}),
            "load": ("file.read", {"path": "out/kept.csv", "format": "csv"}),
            "load_json": ("file.read", {"path": "out/kept.json", "format": "json"}),
            "load_text": ("file.read", {"path": "out/note.txt", "format": "text"}),
        },
        [
            ("start", "floor"),
            ("floor", "keep"),
            ("keep", "save"),
            ("save", "save_json"),
            ("save_json", "save_text"),
            ("save_text", "wait"),
            ("wait", "load"),
            ("load", "load_json"),
            ("load_json", "load_text"),
        ],
    )
    rows = [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    done = await run(client, workflow, {"rows": rows, "min": 1, "max": 4})
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["keep"]["output"] == {"items": [{"n": 2}, {"n": 3}], "count": 2}
    assert steps["load"]["output"] == [{"n": "2"}, {"n": "3"}]
    assert steps["load_json"]["output"] == {"items": [{"n": 2}, {"n": 3}], "count": 2}
    assert steps["load_text"]["output"] == "kept 4"


async def test_sql_query_through_a_postgres_credential(
    client: GraphQLClient, pg_admin_url: str
) -> None:
    await client.execute(
        CREDENTIAL,
        {"i": {"name": "warehouse", "kind": "postgres", "secret": {"url": pg_admin_url}}},
    )
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "q": (
                "sql.query",
                {
                    "credential": "warehouse",
                    "query": "SELECT %s::int + 1 AS answer, %s::text AS word",
                    "parameters": ["{{ inputs.n }}", "it's; DROP TABLE x"],
                },
            ),
        },
        [("start", "q")],
    )
    done = await run(client, workflow, {"n": 41})
    assert done["status"] == "SUCCEEDED", failure(done)
    assert steps_of(done)["q"]["output"]["rows"] == [{"answer": 42, "word": "it's; DROP TABLE x"}]
    # Parameterised only: a template in the statement itself would be SQL injection.
    injectable = {"credential": "warehouse", "query": "SELECT '{{ inputs.word }}' AS word"}
    with pytest.raises(GraphQLError) as refused:
        await client.execute(
            ADD,
            {"i": {"workflowId": workflow, "nodeId": "q2", "type": "sql.query",
                   "config": injectable}},
        )  # fmt: skip
    assert refused.value.codes == ["VALIDATION"]
    assert "query: must be fixed SQL, not a template" in str(refused.value)


async def test_llm_and_extract_through_an_openai_compatible_server(
    client: GraphQLClient, llm: LlmServer
) -> None:
    llm.reply("a haiku", json.dumps({"name": "Ann", "age": 31}), '{"score": 7}')
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "ask": ("ai.llm", {"prompt": "Write about {{ inputs.topic }}", "temperature": 0.2}),
            "pull": (
                "ai.extract",
                {
                    "text": "{{ inputs.bio }}",
                    "fields": {"name": "the person's name", "age": "age in years"},
                },
            ),
            "rate": (
                "ai.llm",
                {"prompt": "Rate: {{ steps.ask.output.text }}", "json_output": True},
            ),
        },
        [("start", "ask"), ("ask", "pull"), ("pull", "rate")],
    )
    done = await run(client, workflow, {"topic": "rain", "bio": "Ann is 31."})
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["ask"]["output"]["text"] == "a haiku"
    assert steps["ask"]["output"]["json"] is None
    assert steps["pull"]["output"] == {"name": "Ann", "age": 31}
    assert steps["rate"]["output"]["json"] == {"score": 7}
    ask, _, rate = llm.requests[-3:]
    assert [m["content"] for m in ask["messages"]] == ["Write about rain"]
    assert "response_format" not in ask
    # JSON mode: asked of the endpoint, and the prompt says JSON (OpenAI requires it).
    assert rate["response_format"] == {"type": "json_object"}
    assert "JSON" in rate["messages"][0]["content"]


def stopped(stack: Stack, execution_id: str) -> list[dict[str, object]] | None:
    """The runners' reports that they stopped a step of the execution (None: none yet)."""
    results = read_topic_raw(stack.settings.kafka_bootstrap or "", "autoops.runner.results")
    return [
        r
        for r in results
        if r.get("execution_id") == execution_id
        and (r.get("error") or {}).get("type") == "Cancelled"  # type: ignore[union-attr]
    ] or None


async def test_cancel_stops_a_running_step(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {"start": MANUAL, "slow": ("http.request", {"url": api.url + "/hold/cancelled"})},
        [("start", "slow")],
    )
    execution_id = await start(client, workflow)
    assert await asyncio.to_thread(api.arrived["cancelled"].wait, 20)
    answer = await client.execute(CANCEL, {"i": {"executionId": execution_id, "reason": "enough"}})
    assert answer["cancelExecution"]["status"] == "CANCELLED"
    done = await wait_for(client, execution_id)
    assert done["status"] == "CANCELLED" and done["error"] == "enough"
    assert steps_of(done)["slow"]["status"] == "CANCELLED"
    with pytest.raises(GraphQLError) as again:
        await client.execute(CANCEL, {"i": {"executionId": execution_id}})
    assert again.value.codes == ["CONFLICT"]

    # Told, not left to run on.
    wait_until(lambda: stopped(stack, execution_id), 20, "the runner stopped the step")
    api.release["cancelled"].set()


async def test_a_stop_node_that_succeeds_stops_the_branch_running_beside_it(
    stack: Stack, client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "slow": ("http.request", {"url": api.url + "/hold/beside-stop"}),
            "end": ("control.stop", {"outcome": "succeed", "output": {"done": True}}),
        },
        [("start", "slow"), ("start", "end")],
    )
    execution_id = await start(client, workflow)
    done = await wait_for(client, execution_id)
    assert done["status"] == "SUCCEEDED" and done["output"] == {"done": True}, failure(done)
    assert steps_of(done)["slow"]["status"] == "CANCELLED"

    # Told to stop whether its task reached the runner before the cancel or after.
    wait_until(
        lambda: stopped(stack, execution_id), 20, "the runner stopped the step beside the stop node"
    )
    api.release["beside-stop"].set()


async def test_a_large_output_goes_to_the_artifact_store_and_stays_usable(
    stack: Stack, client: GraphQLClient
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "big": ("data.transform", {"fields": {"text": "{{ 'x' * 5000 }}"}}),
            "size": ("data.transform", {"fields": {"n": "{{ steps.big.output.text | length }}"}}),
        },
        [("start", "big"), ("big", "size")],
    )
    done = await run(client, workflow)
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    ref = steps["big"]["output"]["$artifact"]
    assert steps["size"]["output"] == {"n": 5000}
    report = await client.execute(REPLAY, {"id": done["id"]})
    assert report["replayExecution"]["deterministic"], report  # reads the artifact back
    async with httpx.AsyncClient(base_url=stack.url) as http:
        fetched = await http.get(f"/artifacts/{ref['sha256']}", headers=client.headers)
        assert fetched.status_code == 200 and fetched.json() == {"text": "x" * 5000}
        assert (await http.get(f"/artifacts/{ref['sha256']}")).status_code == 401
        stranger = await GraphQLClient.signed_up(stack.url)
        try:
            other = await http.get(f"/artifacts/{ref['sha256']}", headers=stranger.headers)
            assert other.status_code == 404
        finally:
            await stranger.close()
        # Uploads: an editor's body becomes an artifact of the workspace (what steps refer to).
        upload = {**client.headers, "content-type": "image/png"}
        made = await http.post("/artifacts", content=b"\x89PNG fake", headers=upload)
        assert made.status_code == 201, made.text
        uploaded = made.json()
        assert uploaded["$artifact"]["media_type"] == "image/png"
        assert uploaded["$artifact"]["size"] == 9
        back = await http.get(uploaded["url"], headers=client.headers)
        assert back.content == b"\x89PNG fake" and back.headers["content-type"] == "image/png"
        assert (await http.post("/artifacts", content=b"x")).status_code == 401
        assert (await http.post("/artifacts", headers=client.headers)).status_code == 400


async def test_retry_from_a_failed_step_skips_earlier_side_effects(
    client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "charge": ("http.request", {"method": "POST", "url": api.url + "/effect/charge"}),
            "ship": (
                "http.request",
                {"url": api.url + "/flaky/ship", "retry": {"max_attempts": 1}},
            ),
        },
        [("start", "charge"), ("charge", "ship")],
    )
    api.fail_first["ship"] = 1
    failed = await run(client, workflow)
    assert failed["status"] == "FAILED" and api.count("charge") == 1
    answer = await client.execute(RETRY, {"i": {"executionId": failed["id"], "fromNodeId": "ship"}})
    retried = await wait_for(client, answer["retryExecution"]["executionId"])
    assert retried["status"] == "SUCCEEDED", failure(retried)
    assert api.count("charge") == 1  # not charged twice
    assert retried["retryOf"] == failed["id"]
    steps = steps_of(retried)
    assert steps["charge"]["status"] == "REUSED"
    assert steps["charge"]["output"] == steps_of(failed)["charge"]["output"]
    report = await client.execute(REPLAY, {"id": retried["id"]})
    assert report["replayExecution"]["deterministic"], report


async def test_retry_from_a_loop_runs_again_only_the_items_that_did_not_succeed(
    client: GraphQLClient, api: ApiServer
) -> None:
    """Item "b" fails and ends the loop; "a" had succeeded (its call made), "c" never ran.
    The retry takes "a"'s recorded output instead of calling again."""
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "each": ("control.loop", {"items": "{{ inputs.rows }}", "concurrency": 1}),
            "call": (
                "http.request",
                {"url": api.url + "/flaky/item-{{ inputs.item }}", "retry": {"max_attempts": 1}},
            ),
        },
        [("start", "each"), ("each", "call", "body"), ("call", "each")],
    )
    api.fail_first["item-b"] = 1
    failed = await run(client, workflow, {"rows": ["a", "b", "c"]})
    assert failed["status"] == "FAILED" and failed["error"].startswith("each"), failure(failed)
    assert [api.count(f"item-{x}") for x in "abc"] == [1, 1, 0]
    answer = await client.execute(RETRY, {"i": {"executionId": failed["id"]}})
    retried = await wait_for(client, answer["retryExecution"]["executionId"])
    assert retried["status"] == "SUCCEEDED", failure(retried)
    assert [api.count(f"item-{x}") for x in "abc"] == [1, 2, 1]  # "a" not called again
    results = steps_of(retried)["each"]["output"]
    assert [r["call"]["body"]["name"] for r in results] == ["item-a", "item-b", "item-c"]
    report = await client.execute(REPLAY, {"id": retried["id"]})
    assert report["replayExecution"]["deterministic"], report


async def test_retry_keeps_a_failure_its_error_edge_handled_and_refuses_one_it_would_repeat(
    client: GraphQLClient, api: ApiServer
) -> None:
    once = {"max_attempts": 1}
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "reserve": ("http.request", {"url": api.url + "/flaky/reserve", "retry": once}),
            "release": ("data.transform", {"fields": {"why": "{{ steps.reserve.error.type }}"}}),
            "notify": ("http.request", {"url": api.url + "/flaky/notify", "retry": once}),
            "side": ("data.transform", {"fields": {"n": 1}}),
        },
        [("start", "reserve"), ("reserve", "release", "error"), ("release", "notify"),
         ("start", "side")],
    )  # fmt: skip
    api.fail_first.update(reserve=1, notify=1)
    failed = await run(client, workflow)
    assert failed["status"] == "FAILED" and failed["error"].startswith("notify"), failure(failed)
    # From `side`, `notify` would keep its failure and end the retry at once: refused.
    with pytest.raises(GraphQLError) as refused:
        await client.execute(RETRY, {"i": {"executionId": failed["id"], "fromNodeId": "side"}})
    assert refused.value.codes == ["VALIDATION"] and "retry from 'notify'" in str(refused.value)
    # By default the retry starts at the failure that ended the execution, not at the one
    # the error edge handled: `reserve` keeps its failure and is not called again.
    answer = await client.execute(RETRY, {"i": {"executionId": failed["id"]}})
    retried = await wait_for(client, answer["retryExecution"]["executionId"])
    assert retried["status"] == "SUCCEEDED", failure(retried)
    assert api.count("reserve") == 1 and api.count("notify") == 2
    steps = steps_of(retried)
    assert steps["reserve"]["status"] == "REUSED"
    assert steps["reserve"]["error"]["type"] == "HttpStatusError"
    assert steps["release"]["status"] == "REUSED"
    assert steps["release"]["output"] == {"why": "HttpStatusError"}
    report = await client.execute(REPLAY, {"id": retried["id"]})
    assert report["replayExecution"]["deterministic"], report


async def test_bad_inputs_configs_and_templates_fail_clearly(client: GraphQLClient) -> None:
    typed = await build(
        client,
        {
            "start": (
                "trigger.manual",
                {
                    "inputs_schema": {
                        "type": "object",
                        "required": ["n"],
                        "properties": {"n": {"type": "integer"}},
                    }
                },
            ),
            "use": ("data.transform", {"fields": {"x": "{{ steps.start.output.none.y }}"}}),
        },
        [("start", "use")],
    )
    with pytest.raises(GraphQLError) as refused:
        await start(client, typed, {"n": "lots"})
    assert refused.value.codes == ["VALIDATION"] and "inputs.n" in str(refused.value)
    done = await run(client, typed, {"n": 1})
    assert done["status"] == "FAILED"
    assert done["error"].startswith("use: use.fields.x")
    assert steps_of(done)["use"]["error"]["type"] == "TemplateError"
    incomplete = await build(
        client, {"start": MANUAL, "call": ("http.request", {})}, [("start", "call")]
    )
    with pytest.raises(GraphQLError) as invalid:
        await start(client, incomplete)
    assert invalid.value.codes == ["VALIDATION"] and "call (http.request)" in str(invalid.value)
    beside = build(
        client,
        {
            "start": MANUAL,
            "a": ("data.transform", {"fields": {}}),
            "b": ("data.transform", {"fields": {"a": "{{ steps.a.output }}"}}),
        },
        [("start", "a"), ("start", "b")],
    )
    with pytest.raises(GraphQLError) as unordered:  # a runs beside b, not before it
        await start(client, await beside)
    assert unordered.value.codes == ["VALIDATION"]
    assert "b.fields.a reads steps.a, which is not upstream of b" in str(unordered.value)


UPDATES = """subscription($id: ID!) { executionUpdates(executionId: $id)
  { type version status nodeId attempt } }"""
LIST = """query($w: ID, $s: ExecutionStatus) { executions(workflowId: $w, status: $s, first: 10)
  { nodes { id status } } }"""


async def test_a_webhook_starts_its_workflow_with_the_request_as_inputs(
    stack: Stack, client: GraphQLClient
) -> None:
    await client.execute(
        CREDENTIAL,
        {
            "i": {
                "name": "orders-hook",
                "kind": "http_header",
                "secret": {"name": "X-Hook-Token", "value": "hook-secret"},
            }
        },
    )
    workflow = await build(
        client,
        {
            "hook": ("trigger.webhook", {"path": "orders", "credential": "orders-hook"}),
            "pick": (
                "data.transform",
                {"fields": {"sku": "{{ inputs.body.sku }}", "q": "{{ inputs.query.src }}"}},
            ),
        },
        [("hook", "pick")],
    )
    url = f"{stack.url}/hooks/{client.workspace}/orders?src=shop"
    async with httpx.AsyncClient() as http:
        refused = await http.post(url, json={"sku": "A1"})  # published: listening at once
        assert refused.status_code == 401, refused.text
        missing = await http.post(f"{stack.url}/hooks/{client.workspace}/nothing", json={})
        assert missing.status_code == 404
        wrong = await http.post(url, json={"sku": "A1"}, headers={"X-Hook-Token": "guess"})
        assert wrong.status_code == 401
        headers = {"X-Hook-Token": "hook-secret", "Idempotency-Key": "delivery-1"}
        answer = await http.post(url, json={"sku": "A1"}, headers=headers)
        assert answer.status_code == 202, answer.text
        again = await http.post(url, json={"sku": "A1"}, headers=headers)
        assert again.json()["executionId"] == answer.json()["executionId"]
        # Deliveries retried at once land in one group commit: still one execution.
        burst = {**headers, "Idempotency-Key": "delivery-2"}
        answers = await asyncio.gather(
            *(http.post(url, json={"sku": "B2"}, headers=burst) for _ in range(6))
        )
        assert sorted(a.status_code for a in answers) == [200] * 5 + [202]
        assert len({a.json()["executionId"] for a in answers}) == 1
    done = await wait_for(client, answer.json()["executionId"])
    second = await wait_for(client, answers[0].json()["executionId"])
    assert steps_of(second)["pick"]["output"] == {"sku": "B2", "q": "shop"}
    assert done["status"] == "SUCCEEDED", failure(done)
    assert steps_of(done)["pick"]["output"] == {"sku": "A1", "q": "shop"}
    assert done["trigger"]["kind"] == "webhook"
    assert "hook-secret" not in json.dumps(done)
    listed = await client.execute(LIST, {"w": workflow, "s": "SUCCEEDED"})
    assert sorted(n["id"] for n in listed["executions"]["nodes"]) == sorted(
        [done["id"], second["id"]]
    )
    # Past the workspace's rate (20 in any one second on this stack): 429 with Retry-After,
    # nothing started. The counts go by the seconds the flood spanned (a loaded machine may
    # spread it over several); exact windows are tested with a clock of the test's own.
    async with httpx.AsyncClient() as http:
        first_second = int(time.time())
        flood = await asyncio.gather(
            *(
                http.post(f"{stack.url}/hooks/{client.workspace}/nothing", json={})
                for _ in range(100)
            )
        )
        seconds = int(time.time()) - first_second + 1
    limited = [a for a in flood if a.status_code == 429]
    assert {a.status_code for a in flood} <= {404, 429}
    assert len(flood) - len(limited) <= 20 * seconds
    assert limited, f"100 webhooks in {seconds} s were all admitted"
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].json()["error"]["code"] == "RATE_LIMITED"


UPDATE_NODE = "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { version } }"
DRAFT = "query($id: ID!, $v: Int) { workflow(id: $id, atLeastVersion: $v) { version } }"


async def test_a_webhook_listens_once_published_whatever_the_read_model_or_the_draft_says(
    stack: Stack, client: GraphQLClient
) -> None:
    def url(path: str) -> str:
        return f"{stack.url}/hooks/{client.workspace}/{path}"

    projector = stack.supervisor.children["projector"]
    os.kill(projector.pid, signal.SIGSTOP)  # the read model knows nothing of what follows
    try:
        workflow = await build(
            client,
            {
                "hook": ("trigger.webhook", {"path": "fresh"}),
                "echo": ("data.transform", {"fields": {"n": "{{ inputs.body.n }}"}}),
            },
            [("hook", "echo")],
        )
        async with httpx.AsyncClient() as http:
            at_once = await http.post(url("fresh"), json={"n": 1})
    finally:
        os.kill(projector.pid, signal.SIGCONT)
    assert at_once.status_code == 202, at_once.text

    # The draft moves the path and the read model shows it: the published version still
    # listens where it did, and the draft's path only once published.
    edit = {"workflowId": workflow, "nodeId": "hook", "config": {"path": "next"}}
    version = (await client.execute(UPDATE_NODE, {"i": edit}))["updateNode"]["version"]

    async def drafted_shown() -> bool:
        try:
            shown = await client.execute(DRAFT, {"id": workflow, "v": version})
        except GraphQLError as exc:  # the projector further behind than the read wait
            if exc.codes == ["UNAVAILABLE"]:
                return False
            raise
        return bool(shown["workflow"]["version"] >= version)

    await eventually(drafted_shown, 30, "the read model shows the draft's new path")
    async with httpx.AsyncClient() as http:
        published = await http.post(url("fresh"), json={"n": 2})
        drafted = await http.post(url("next"), json={"n": 3})
    assert published.status_code == 202, published.text
    assert drafted.status_code == 404, drafted.text
    for answer, n in ((at_once, 1), (published, 2)):
        done = await wait_for(client, answer.json()["executionId"])
        assert done["status"] == "SUCCEEDED", failure(done)
        assert steps_of(done)["echo"]["output"] == {"n": n}


async def test_a_webhook_body_past_the_limit_is_refused_declared_or_chunked(
    stack: Stack, client: GraphQLClient
) -> None:
    limit = stack.settings.webhook_max_body_bytes
    url = f"{stack.url}/hooks/{client.workspace}/anything"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read as it comes
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536

    async with httpx.AsyncClient(timeout=30) as http:
        declared = await http.post(url, content=b"x" * (limit + 1))
        chunked = await http.post(url, content=chunks())
        within = await http.post(url, content=b"x" * 1000)
    for answer in (declared, chunked):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "TOO_LARGE"
    assert within.status_code == 404  # read whole; no workflow listens there


async def test_a_cron_trigger_starts_executions_on_its_schedule(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "tick": ("trigger.cron", {"expression": "* * * * * */2", "timezone": "Europe/Paris"}),
            "note": ("data.transform", {"fields": {"at": "{{ inputs.scheduled_at }}"}}),
        },
        [("tick", "note")],
    )
    listed = await client.settled(
        LIST,
        {"w": workflow, "s": "SUCCEEDED"},
        lambda data: len(data["executions"]["nodes"]) >= 2,
        "two scheduled executions",
        timeout=20,
    )
    nodes = listed["executions"]["nodes"]
    first = await wait_for(client, str(nodes[-1]["id"]))
    assert first["trigger"]["kind"] == "cron"
    at = steps_of(first)["note"]["output"]["at"]
    assert int(at) % 2 == 0  # fired on the schedule's even seconds


async def test_a_workflow_runs_at_most_its_concurrency_limit_at_once(
    client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": ("trigger.manual", {"max_concurrency": 1}),
            "slow": ("http.request", {"url": api.url + "/hold/{{ inputs.name }}"}),
        },
        [("start", "slow")],
    )
    first = await start(client, workflow, {"name": "limit-1"})
    second = await start(client, workflow, {"name": "limit-2"})
    assert await asyncio.to_thread(api.arrived["limit-1"].wait, 20)
    queued = await wait_for(client, second, ("QUEUED",))
    assert not api.arrived["limit-2"].is_set()
    assert queued["steps"] == []
    api.release["limit-1"].set()
    assert (await wait_for(client, first))["status"] == "SUCCEEDED"
    assert await asyncio.to_thread(api.arrived["limit-2"].wait, 20)
    api.release["limit-2"].set()
    assert (await wait_for(client, second))["status"] == "SUCCEEDED"

    # A queue is first in, first out: started back to back (one poll of the orchestrator
    # may hold them all, read partition by partition), they run in the order they started.
    fifo = await build(
        client,
        {
            "start": ("trigger.manual", {"max_concurrency": 1}),
            "call": ("http.request", {"method": "POST", "url": api.url + "/effect/fifo?ms=20",
                                      "body": {"n": "{{ inputs.n }}"}}),
        },
        [("start", "call")],
    )  # fmt: skip
    ids = [await start(client, fifo, {"n": n}) for n in range(6)]
    for execution_id in ids:
        assert (await wait_for(client, execution_id))["status"] == "SUCCEEDED"
    assert [c["body"]["n"] for c in api.calls["fifo"]] == list(range(6))


async def test_step_and_execution_timeouts(client: GraphQLClient, api: ApiServer) -> None:
    step_limited = await build(
        client,
        {
            "start": MANUAL,
            "slow": (
                "http.request",
                {
                    "url": api.url + "/hold/step-timeout",
                    "timeout_s": 0.5,
                    "retry": {"max_attempts": 1},
                },
            ),
        },
        [("start", "slow")],
    )
    done = await run(client, step_limited)
    assert done["status"] == "TIMED_OUT", failure(done)
    assert steps_of(done)["slow"]["error"]["type"] == "StepTimeout"
    run_limited = await build(
        client,
        {
            "start": ("trigger.manual", {"timeout_s": 0.5}),
            "wait": ("control.delay", {"seconds": 30}),
        },
        [("start", "wait")],
    )
    done = await run(client, run_limited)
    assert done["status"] == "TIMED_OUT" and "longer than 0.5" in done["error"]
    api.release["step-timeout"].set()


async def test_execution_updates_stream_every_event_until_the_end(
    client: GraphQLClient, api: ApiServer
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "slow": ("http.request", {"url": api.url + "/hold/watched"}),
            "after": ("data.transform", {}),
        },
        [("start", "slow"), ("slow", "after")],
    )
    execution_id = await start(client, workflow)
    seen: list[dict[str, object]] = []
    async with client.subscribe(UPDATES, {"id": execution_id}) as updates:
        async for update in updates:
            seen.append(update["executionUpdates"])
            if update["executionUpdates"]["type"].endswith("StepScheduled"):
                api.release["watched"].set()
    kinds = [str(u["type"]).split(".")[-1] for u in seen]
    assert kinds[0] == "ExecutionStarted" and kinds[-1] == "ExecutionFinished"
    assert kinds.count("StepSucceeded") == 2
    assert seen[-1]["status"] == "SUCCEEDED"
    assert [u["version"] for u in seen] == list(range(1, len(seen) + 1))


def test_readiness_names_the_orchestrator_and_runners(stack: Stack, display: str | None) -> None:
    def workers() -> dict[str, object] | None:
        report = stack.wait_ready()
        found = report.get("workers")
        ok = isinstance(found, dict) and found.get("orchestrator") == "up"
        runners = {"default": 1, "browser": 1} | ({"desktop": 1} if display else {})
        return found if ok and found.get("runners") == runners else None  # type: ignore[union-attr]

    wait_until(workers, 20, "the orchestrator and one runner of each pool reporting")


async def test_loops_nest(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "rows": ("control.loop", {"items": "{{ inputs.grid }}"}),
            "cells": ("control.loop", {"items": "{{ inputs.item }}", "concurrency": 3}),
            "double": ("data.transform", {"fields": {"v": "{{ inputs.item * 2 }}"}}),
            "flag": ("control.if", {"condition": "{{ 'false' }}"}),
            "never": ("data.transform", {}),
        },
        [
            ("start", "rows"),
            ("rows", "cells", "body"),
            ("cells", "double", "body"),
            ("rows", "flag"),
            ("flag", "never", "true"),
        ],
    )
    done = await run(client, workflow, {"grid": [[1, 2], [3]]})
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    rows = steps["rows"]["output"]
    assert [[cell["double"]["v"] for cell in row["cells"]] for row in rows] == [[2, 4], [6]]
    assert steps["never"]["status"] == "SKIPPED"  # the text "false" does not hold


SET_VARIABLE = "mutation($i: SetVariableInput!) { setVariable(input: $i) { name } }"
DELETE_VARIABLE = "mutation($i: DeleteVariableInput!) { deleteVariable(input: $i) { name } }"
VARIABLES = "{ variables { name value updatedBy } }"


async def test_workspace_variables_are_vars_pinned_when_an_execution_starts(
    client: GraphQLClient,
) -> None:
    await client.execute(SET_VARIABLE, {"i": {"name": "region", "value": "eu-west"}})
    await client.execute(SET_VARIABLE, {"i": {"name": "limits", "value": {"max": 3}}})
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "use": (
                "data.transform",
                {"fields": {"where": "{{ vars.region }}", "max": "{{ vars.limits.max }}"}},
            ),
        },
        [("start", "use")],
    )
    first = await run(client, workflow)
    assert first["status"] == "SUCCEEDED", failure(first)
    assert steps_of(first)["use"]["output"] == {"where": "eu-west", "max": 3}

    await client.execute(SET_VARIABLE, {"i": {"name": "region", "value": "us-east"}})
    second = await run(client, workflow)
    assert steps_of(second)["use"]["output"] == {"where": "us-east", "max": 3}
    report = await client.execute(REPLAY, {"id": first["id"]})
    assert report["replayExecution"]["deterministic"], report  # the values it started with

    async def listed() -> list[dict[str, object]] | None:
        rows = (await client.execute(VARIABLES))["variables"]
        return rows if [r["value"] for r in rows] == [{"max": 3}, "us-east"] else None

    rows = await eventually(listed, 30, "both variables listed, the second changed")
    assert [r["name"] for r in rows] == ["limits", "region"]
    assert rows[0]["updatedBy"] == client.actor

    for bad in ({"name": "1st", "value": 1}, {"name": "a-b", "value": 1},
                {"name": "big", "value": "x" * 20_000}):  # fmt: skip
        with pytest.raises(GraphQLError) as refused:
            await client.execute(SET_VARIABLE, {"i": bad})
        assert refused.value.codes == ["VALIDATION"], bad
    with pytest.raises(GraphQLError) as missing:
        await client.execute(DELETE_VARIABLE, {"i": {"name": "never_set"}})
    assert missing.value.codes == ["NOT_FOUND"]

    await client.execute(DELETE_VARIABLE, {"i": {"name": "limits"}})
    third = await run(client, workflow)
    assert third["status"] == "FAILED"
    assert third["error"].startswith("use: use.fields.max"), third["error"]


async def test_edges_with_conditions_route_on_the_output(client: GraphQLClient) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "read": ("data.transform", {"fields": {"t": "{{ inputs.t }}"}}),
            "hot": ("data.transform", {"fields": {"say": "hot"}}),
            "cold": ("data.transform", {"fields": {"say": "cold"}}),
            "log": ("data.transform", {"fields": {"t": "{{ steps.read.output.t }}"}}),
        },
        [
            ("start", "read"),
            ("read", "hot", None, "{{ output.t > 20 }}"),
            ("read", "cold", None, "{{ output.t <= 20 }}"),
            ("read", "log"),
        ],
    )
    warm = await run(client, workflow, {"t": 25})
    assert warm["status"] == "SUCCEEDED", failure(warm)
    assert {n: s["status"] for n, s in steps_of(warm).items()} == {
        "read": "SUCCEEDED", "hot": "SUCCEEDED", "cold": "SKIPPED", "log": "SUCCEEDED",
    }  # fmt: skip
    chilly = await run(client, workflow, {"t": 5})
    assert steps_of(chilly)["cold"]["output"] == {"say": "cold"}
    assert steps_of(chilly)["hot"]["status"] == "SKIPPED"
    report = await client.execute(REPLAY, {"id": warm["id"]})
    assert report["replayExecution"]["deterministic"], report

    broken = await build(
        client,
        {"start": MANUAL, "next": ("data.transform", {"fields": {}})},
        [("start", "next", None, "{{ output.nothing.here }}")],
    )
    done = await run(client, broken)
    assert done["status"] == "FAILED"
    assert done["error"].startswith("start: the condition of edge start → next:"), done["error"]


SHOP = b"""<!doctype html><title>Shop</title>
<form onsubmit="event.preventDefault(); document.querySelector('#done').textContent =
  'thanks ' + document.querySelector('#who').value">
  <input id=who><button data-testid=buy>Buy</button></form><p id=done></p>"""


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    """A one-page site for the browser runner (a real page over HTTP on this machine)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(SHOP)))
            self.end_headers()
            self.wfile.write(SHOP)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no Debian chromium")
async def test_a_browser_workflow_runs_on_the_browser_pool_with_outputs_and_screenshots(
    stack: Stack, client: GraphQLClient, shop: str
) -> None:
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "open": ("browser.open", {"url": "{{ inputs.url }}"}),
            "name": ("browser.fill", {"selector": "#who", "value": "{{ inputs.who }}"}),
            "buy": ("browser.click", {"selector": "data-testid=buy"}),
            "check": ("browser.assert_text", {"selector": "#done", "text": "thanks"}),
            "read": ("browser.extract_text", {"selector": "#done"}),
            "shot": ("browser.screenshot", {}),
        },
        [("start", "open"), ("open", "name"), ("name", "buy"), ("buy", "check"),
         ("check", "read"), ("read", "shot")],
    )  # fmt: skip
    done = await run(client, workflow, {"url": shop, "who": "Ada"}, timeout=60)
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["open"]["output"]["title"] == "Shop"
    assert steps["read"]["output"] == {"text": "thanks Ada"}
    assert all(steps[n]["durationMs"] is not None for n in ("open", "buy", "shot"))
    shot = steps["shot"]["output"]["screenshot"]["$artifact"]
    [listed] = steps["shot"]["artifacts"]
    assert listed == {
        "sha256": shot["sha256"], "size": shot["size"], "mediaType": "image/png",
        "downloadUrl": f"/artifacts/{shot['sha256']}",
    }  # fmt: skip
    async with httpx.AsyncClient() as http:
        png = await http.get(f"{stack.url}{listed['downloadUrl']}", headers=client.headers)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    query = "query($s: String!) { artifact(sha256: $s) { size mediaType downloadUrl } }"
    meta = await client.execute(query, {"s": shot["sha256"]})
    assert meta["artifact"] == {k: listed[k] for k in ("size", "mediaType", "downloadUrl")}
    assert (await client.execute(query, {"s": "0" * 64}))["artifact"] is None

    broken = await build(
        client,
        {
            "start": MANUAL,
            "open": ("browser.open", {"url": "{{ inputs.url }}"}),
            "buy": ("browser.click", {"selector": "#gone", "timeout_s": 2,
                                      "retry": {"max_attempts": 1}}),
        },
        [("start", "open"), ("open", "buy")],
    )  # fmt: skip
    failed = await run(client, broken, {"url": shop}, timeout=60)
    assert failed["status"] == "FAILED"
    error = steps_of(failed)["buy"]["error"]
    assert error["type"] == "BrowserTimeout" and "#gone" in error["message"]
    assert error["details"]["url"] == shop
    evidence = error["details"]["screenshot"]["$artifact"]
    assert [a["sha256"] for a in steps_of(failed)["buy"]["artifacts"]] == [evidence["sha256"]]
    async with httpx.AsyncClient() as http:
        png = await http.get(f"{stack.url}/artifacts/{evidence['sha256']}", headers=client.headers)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


@pytest.mark.skipif(not shutil.which("tesseract"), reason="no tesseract-ocr (.ci/run installs it)")
async def test_a_desktop_workflow_launches_an_app_reads_and_clicks_it(
    stack: Stack, client: GraphQLClient, display: str | None, tmp_path: Path
) -> None:
    if display is None:
        pytest.skip("no Xvfb (.ci/run installs it)")
    state = tmp_path / "app.jsonl"
    app = [sys.executable, "-m", "tests.desktop_app", str(state), "1.0", "Invoices app"]
    workflow = await build(
        client,
        {
            "start": MANUAL,
            "launch": ("desktop.launch_app", {"command": app, "wait_for_window": "Invoices app"}),
            "read": ("desktop.wait_for_text", {"text": "approved by Maria"}),
            "save": ("desktop.click_text", {"text": "Save"}),
            "shot": ("desktop.screenshot", {}),
        },
        [("start", "launch"), ("launch", "read"), ("read", "save"), ("save", "shot")],
    )
    done = await run(client, workflow, timeout=90)
    assert done["status"] == "SUCCEEDED", failure(done)
    steps = steps_of(done)
    assert steps["launch"]["output"]["window"]["title"] == "Invoices app"
    assert steps["read"]["output"]["found"] is True
    assert any('"name": "Save"' in line for line in state.read_text().splitlines())
    where = json.loads(state.read_text().splitlines()[0])["icon"]
    shot = steps["shot"]["output"]["screenshot"]["$artifact"]
    async with httpx.AsyncClient(base_url=stack.url, headers=client.headers) as http:
        screen = (await http.get(f"/artifacts/{shot['sha256']}")).content
        # The template a user would upload: the icon, cut from that screenshot.
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(screen, np.uint8), cv2.IMREAD_COLOR)
        x, y, w, h = where["x"], where["y"], where["width"], where["height"]
        icon = cv2.imencode(".png", image[y : y + h, x : x + w])[1].tobytes()
        made = await http.post("/artifacts", content=icon, headers={"content-type": "image/png"})
    template = made.json()["$artifact"]["sha256"]
    clicker = await build(
        client,
        {
            "start": MANUAL,
            "icon": ("desktop.click_image", {"image": template, "wait": True}),
            "close": ("desktop.close_window", {"title": "Invoices app"}),
        },
        [("start", "icon"), ("icon", "close")],
    )
    clicked = await run(client, clicker, timeout=90)
    assert clicked["status"] == "SUCCEEDED", failure(clicked)
    assert steps_of(clicked)["icon"]["output"]["confidence"] > 0.95
    kinds = [json.loads(line)["kind"] for line in state.read_text().splitlines()]
    assert "icon_click" in kinds and kinds[-1] == "closed"
