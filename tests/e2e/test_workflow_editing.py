"""The user story of the spine, end to end through GraphQL on the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import redis.asyncio as aioredis
from kafka import KafkaProducer

from command_side.bus import CommandBus
from command_side.store import WorkflowStore
from command_side.workflow import commands as c
from infra import embedded
from infra.settings import eventsourcing_env_for
from tests.execution_client import start
from tests.graphql_client import GraphQLClient, GraphQLError
from tests.kafka_read import read_topic
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import eventually, http_answer, wait_until

CREATE = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { workflowId version } }"
ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { workflowId version nodeId } }"
CONNECT = "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { version edgeId } }"
DISCONNECT = "mutation($i: DisconnectNodesInput!) { disconnectNodes(input: $i) { version } }"
UPDATE = "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { version } }"
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"
REMOVE = "mutation($i: RemoveNodeInput!) { removeNode(input: $i) { version } }"
RENAME = "mutation($i: RenameWorkflowInput!) { renameWorkflow(input: $i) { version } }"
DESCRIBE = (
    "mutation($i: ChangeWorkflowDescriptionInput!) "
    "{ changeWorkflowDescription(input: $i) { version } }"
)
PUBLISH = (
    "mutation($i: PublishWorkflowInput!) { publishWorkflow(input: $i) { version versionNumber } }"
)
WORKFLOW = """query($id: ID!, $v: Int, $at: Int) {
  workflow(id: $id, atLeastVersion: $v, atVersion: $at) {
  id name description version nodeCount edgeCount publishedVersion createdBy updatedBy
  nodes { id type name config x y } edges { id sourceId targetId label condition }
  versions { number aggregateVersion note publishedBy } } }"""
EVENTS = """subscription($id: ID!, $after: Int) {
  workflowEvents(workflowId: $id, afterVersion: $after)
  { workflowId version type actorId occurredAt payload } }"""


async def create(client: GraphQLClient, name: str = "Invoices", **extra: Any) -> str:
    data = await client.execute(CREATE, {"i": {"name": name, **extra}})
    return str(data["createWorkflow"]["workflowId"])


async def add(
    client: GraphQLClient, wid: str, node_type: str = "http.request", **extra: Any
) -> dict[str, Any]:
    data = await client.execute(ADD, {"i": {"workflowId": wid, "type": node_type, **extra}})
    return dict(data["addNode"])


async def read(client: GraphQLClient, wid: str, version: int) -> dict[str, Any]:
    data = await client.caught_up(WORKFLOW, {"id": wid, "v": version}, version)
    return dict(data["workflow"])


async def test_edits_reach_the_subscription_kafka_and_the_workflow_query(
    client: GraphQLClient, stack: Stack
) -> None:
    wid = await create(client)
    async with client.subscribe(EVENTS, {"id": wid}) as events:
        first = await asyncio.wait_for(anext(events), 10)
        assert first["workflowEvents"]["type"] == "Created"
        a = await add(client, wid, "trigger.manual", name="start")
        b = await add(client, wid, config={"url": "https://example.com", "method": "GET"}, x=200)
        edge = await client.execute(
            CONNECT,
            {
                "i": {
                    "workflowId": wid,
                    "sourceId": a["nodeId"],
                    "targetId": b["nodeId"],
                    "label": "ok",
                }
            },
        )
        await client.execute(
            MOVE, {"i": {"workflowId": wid, "nodeId": b["nodeId"], "x": 5, "y": 6}}
        )
        await client.execute(RENAME, {"i": {"workflowId": wid, "name": "Invoices v2"}})
        await client.execute(DESCRIBE, {"i": {"workflowId": wid, "description": "pays bills"}})
        pub = await client.execute(PUBLISH, {"i": {"workflowId": wid, "note": "first"}})
        assert pub["publishWorkflow"] == {"version": 8, "versionNumber": 1}
        seen = [first["workflowEvents"]]
        while len(seen) < 8:
            seen.append((await asyncio.wait_for(anext(events), 10))["workflowEvents"])
    assert [e["version"] for e in seen] == list(range(1, 9))
    assert [e["type"] for e in seen] == [
        "Created",
        "NodeAdded",
        "NodeAdded",
        "NodesConnected",
        "NodeMoved",
        "Renamed",
        "DescriptionChanged",
        "Published",
    ]
    assert {e["actorId"] for e in seen} == {client.actor}
    assert seen[3]["payload"]["edge_id"] == edge["connectNodes"]["edgeId"]

    workflow = await read(client, wid, 8)
    assert workflow["version"] == 8 and workflow["name"] == "Invoices v2"
    assert workflow["description"] == "pays bills"
    assert (workflow["nodeCount"], workflow["edgeCount"], workflow["publishedVersion"]) == (2, 1, 1)
    assert workflow["nodes"][0]["config"] in ({}, {"url": "https://example.com", "method": "GET"})
    assert workflow["edges"][0]["label"] == "ok"
    assert workflow["versions"][0] == {
        "number": 1,
        "aggregateVersion": 7,
        "note": "first",
        "publishedBy": client.actor,
    }

    assert stack.settings.kafka_bootstrap
    on_kafka = read_topic(
        stack.settings.kafka_bootstrap,
        "autoops.workflow.events",
        8,
        timeout=30,
        matching=lambda m: m["aggregate_id"] == wid,
    )
    assert {m["_key"] for m in on_kafka} == {wid}


async def test_subscription_resumes_after_a_version_without_gaps_or_duplicates(
    client: GraphQLClient,
) -> None:
    wid = await create(client)
    for i in range(5):
        await add(client, wid, name=f"n{i}")
    await read(client, wid, 6)
    async with client.subscribe(EVENTS, {"id": wid, "after": 3}) as events:
        got = [
            (await asyncio.wait_for(anext(events), 10))["workflowEvents"]["version"]
            for _ in range(3)
        ]
        assert got == [4, 5, 6]
        await add(client, wid)
        nxt = await asyncio.wait_for(anext(events), 10)
        assert nxt["workflowEvents"]["version"] == 7


async def test_time_travel_rebuilds_any_past_version(client: GraphQLClient) -> None:
    wid = await create(client, "before")
    node = await add(client, wid)
    await client.execute(
        UPDATE, {"i": {"workflowId": wid, "nodeId": node["nodeId"], "config": {"timeout_s": 3}}}
    )
    await client.execute(REMOVE, {"i": {"workflowId": wid, "nodeId": node["nodeId"]}})
    await client.execute(RENAME, {"i": {"workflowId": wid, "name": "after"}})
    past = (await client.execute(WORKFLOW, {"id": wid, "at": 3}))["workflow"]
    assert past["name"] == "before" and past["version"] == 3
    assert past["nodes"][0]["config"] == {"timeout_s": 3}
    now = (await client.execute(WORKFLOW, {"id": wid, "at": 5}))["workflow"]
    assert now["name"] == "after" and now["nodes"] == []
    with pytest.raises(GraphQLError) as info:
        await client.execute(WORKFLOW, {"id": wid, "at": 6})
    assert info.value.codes == ["NOT_FOUND"]


async def test_a_repeated_client_op_id_returns_the_first_result(client: GraphQLClient) -> None:
    first = await client.execute(CREATE, {"i": {"name": "once", "clientOpId": "c-1"}})
    again = await client.execute(CREATE, {"i": {"name": "once", "clientOpId": "c-1"}})
    assert first == again
    wid = first["createWorkflow"]["workflowId"]
    one = await add(client, wid, clientOpId="a-1")
    two = await add(client, wid, clientOpId="a-1")
    assert one == two
    assert (await read(client, wid, 2))["version"] == 2


async def test_a_client_op_id_reused_for_another_mutation_is_a_conflict(
    client: GraphQLClient,
) -> None:
    wid = await create(client)
    node = await add(client, wid, node_type="data.transform", clientOpId="k-1")
    with pytest.raises(GraphQLError) as info:
        await client.execute(PUBLISH, {"i": {"workflowId": wid, "clientOpId": "k-1"}})
    assert info.value.codes == ["CONFLICT"]
    with pytest.raises(GraphQLError) as info:
        await client.execute(RENAME, {"i": {"workflowId": wid, "name": "x", "clientOpId": "k-1"}})
    assert info.value.codes == ["CONFLICT"]
    assert await add(client, wid, node_type="data.transform", clientOpId="k-1") == node
    seen = await read(client, wid, 2)
    assert (seen["version"], seen["name"], seen["versions"]) == (2, "Invoices", [])


async def test_a_stale_expected_version_is_rebased_or_conflicts(client: GraphQLClient) -> None:
    wid = await create(client)
    a = await add(client, wid, nodeId="a")
    await add(client, wid, nodeId="b")
    await client.execute(REMOVE, {"i": {"workflowId": wid, "nodeId": "a", "expectedVersion": 3}})
    moved = await client.execute(
        MOVE, {"i": {"workflowId": wid, "nodeId": "b", "x": 1, "y": 1, "expectedVersion": 3}}
    )
    assert moved["moveNode"]["version"] == 5
    with pytest.raises(GraphQLError) as info:
        await client.execute(
            UPDATE,
            {"i": {"workflowId": wid, "nodeId": a["nodeId"], "name": "x", "expectedVersion": 3}},
        )
    assert info.value.codes == ["CONFLICT"]
    assert info.value.errors[0]["extensions"]["currentVersion"] == 5


BAD_INPUTS = [
    (RENAME, {"name": "  "}, "VALIDATION"),
    (ADD, {"type": "bad type!"}, "VALIDATION"),
    (ADD, {"type": "http.request", "config": [1, 2]}, "VALIDATION"),
    (ADD, {"type": "no.such"}, "VALIDATION"),
    (ADD, {"type": "http.request", "config": {"method": "FETCH"}}, "VALIDATION"),
    (UPDATE, {"nodeId": "ghost", "name": "x"}, "NOT_FOUND"),
    (MOVE, {"nodeId": "ghost", "x": 1, "y": 1}, "NOT_FOUND"),
    (REMOVE, {"nodeId": "ghost"}, "NOT_FOUND"),
    (CONNECT, {"sourceId": "a", "targetId": "a"}, "VALIDATION"),
    (CONNECT, {"sourceId": "a", "targetId": "b"}, "VALIDATION"),
    (CONNECT, {"sourceId": "a", "targetId": "ghost"}, "NOT_FOUND"),
    (DISCONNECT, {"edgeId": "e_ghost"}, "NOT_FOUND"),
]


@pytest.mark.parametrize(("mutation", "fields", "code"), BAD_INPUTS)
async def test_bad_input_gets_a_typed_error_and_changes_nothing(
    client: GraphQLClient, mutation: str, fields: dict[str, Any], code: str
) -> None:
    wid = await create(client)
    await add(client, wid, nodeId="a")
    await add(client, wid, nodeId="b")
    await client.execute(CONNECT, {"i": {"workflowId": wid, "sourceId": "a", "targetId": "b"}})
    with pytest.raises(GraphQLError) as info:
        await client.execute(mutation, {"i": {"workflowId": wid, **fields}})
    assert info.value.codes == [code]
    with pytest.raises(GraphQLError) as nothing_appended:
        await client.execute(WORKFLOW, {"id": wid, "at": 5})
    assert nothing_appended.value.codes == ["NOT_FOUND"]
    assert (await read(client, wid, 4))["version"] == 4
    history = await client.execute(
        "query($id: ID!) { workflowHistory(id: $id) { nodes { version } } }", {"id": wid}
    )
    assert [n["version"] for n in history["workflowHistory"]["nodes"]] == [4, 3, 2, 1]


async def test_unknown_ids_and_other_workspaces_are_not_found(stack: Stack) -> None:
    alice = await GraphQLClient.signed_up(stack.url)
    mallory = await GraphQLClient.signed_up(stack.url)
    try:
        wid = await create(alice)
        await read(alice, wid, 1)
        for query, variables in [
            (WORKFLOW, {"id": wid}),
            (WORKFLOW, {"id": "not-a-uuid"}),
            ("query($id: ID!) { workflowHistory(id: $id) { nodes { version } } }", {"id": wid}),
            (RENAME, {"i": {"workflowId": wid, "name": "mine"}}),
            (ADD, {"i": {"workflowId": wid, "type": "http.request"}}),
        ]:
            with pytest.raises(GraphQLError) as info:
                await mallory.execute(query, variables)
            assert info.value.codes == ["NOT_FOUND"], query
        with pytest.raises(GraphQLError) as sub_info:
            async with mallory.subscribe(EVENTS, {"id": wid}) as events:
                await asyncio.wait_for(anext(events), 10)
        assert sub_info.value.codes == ["NOT_FOUND"]
        listed = await mallory.execute("{ workflows { nodes { id } } }")
        assert listed["workflows"]["nodes"] == []
    finally:
        await alice.close()
        await mallory.close()


async def never_missing(
    client: GraphQLClient, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """The answer, asked again on UNAVAILABLE (a projector further behind than the api's read
    wait, as on a loaded machine); NOT_FOUND fails."""

    async def ask() -> dict[str, Any] | None:
        try:
            return await client.execute(query, variables)
        except GraphQLError as behind:
            if behind.codes == ["UNAVAILABLE"]:
                return None
            raise

    return await eventually(ask, 30, f"an answer to {query}")


async def test_what_a_client_just_wrote_reads_back_and_a_stalled_projector_says_so(
    stack: Stack, client: GraphQLClient
) -> None:
    """Read models lag the store by the projector: a read of a workflow created or an execution
    started a moment ago waits for it (no `atLeastVersion` needed) and is never NOT_FOUND; the
    projector's change notice ends the wait; past the wait the answer is UNAVAILABLE (ask
    again), while an id the store does not hold, or holds for another workspace, is
    NOT_FOUND."""
    history = "query($id: ID!) { workflowHistory(id: $id) { nodes { version } } }"
    validation = "query($id: ID!) { validateWorkflow(id: $id) { valid } }"
    comments = "query($id: ID!) { comments(workflowId: $id) { id } }"
    runs = "query($id: ID!) { executions(workflowId: $id) { nodes { id } } }"
    execution = "query($id: ID!) { execution(id: $id) { id status } }"
    for query in (WORKFLOW, history, validation, comments, runs):
        wid = await create(client)
        await never_missing(client, query, {"id": wid})
    await add(client, wid, "trigger.manual", nodeId="go", config={})
    await client.execute(PUBLISH, {"i": {"workflowId": wid}})
    for _ in range(3):
        eid = await start(client, wid)
        found = await never_missing(client, execution, {"id": eid})
        assert found["execution"]["id"] == eid

    projector = stack.supervisor.children["projector"]
    mallory = await GraphQLClient.signed_up(stack.url)
    redis = aioredis.Redis.from_url(stack.settings.redis_url)
    try:
        # Stalled past the read wait: UNAVAILABLE for what the store holds, NOT_FOUND for the
        # rest (each field waits up to 2 s, so they are asked all at once).
        os.kill(projector.pid, signal.SIGSTOP)
        try:
            fresh, eid = await create(client), await start(client, wid)
            asked = [
                *((client, q, fresh) for q in (WORKFLOW, history, validation, comments, runs)),
                (client, execution, eid),
                (mallory, WORKFLOW, fresh),
                (mallory, execution, eid),
                (client, WORKFLOW, str(uuid4())),
                (client, execution, str(uuid4())),
            ]
            answers = await asyncio.gather(
                *(who.execute(q, {"id": i}) for who, q, i in asked), return_exceptions=True
            )
        finally:
            os.kill(projector.pid, signal.SIGCONT)
        codes = [a.codes if isinstance(a, GraphQLError) else a for a in answers]
        assert codes == [["UNAVAILABLE"]] * 6 + [["NOT_FOUND"]] * 4, codes
        assert all(a.errors[0]["extensions"]["retryAfter"] == 1 for a in answers[:6])  # type: ignore[union-attr]
        await never_missing(client, WORKFLOW, {"id": fresh})

        # Stalled for less than the wait: the read waiting on its feed is answered once the
        # projector folds the workflow and says so.
        os.kill(projector.pid, signal.SIGSTOP)
        try:
            late = await create(client)
            reading = asyncio.create_task(client.execute(WORKFLOW, {"id": late}))
            channel = f"autoops:{client.workspace}:workflow:{late}"

            async def waiting() -> bool:
                listeners = dict(await redis.pubsub_numsub(channel))
                return listeners.get(channel.encode(), 0) > 0

            await eventually(waiting, 10, "the read waiting on the workflow's notices")
        finally:
            os.kill(projector.pid, signal.SIGCONT)
        assert (await reading)["workflow"]["id"] == late
    finally:
        await mallory.close()
        await redis.aclose()


async def test_text_postgresql_cannot_hold_never_wedges_the_projector(
    client: GraphQLClient,
) -> None:
    """A NUL is text JSON may carry and no PostgreSQL `text`/`jsonb` value may hold: the
    events keep it, the read models show U+FFFD, and the projector goes on (a batch it cannot
    commit it would read again after every restart). A lone surrogate is not Unicode at all:
    refused with VALIDATION, nothing stored."""
    wid = await create(client)
    await client.execute(DESCRIBE, {"i": {"workflowId": wid, "description": "a\x00b"}})
    await add(client, wid, "data.transform", nodeId="t", config={"fields": {"x": "\x00"}})
    for field, value in (("description", "\ud800"), ("config", {"fields": {"x": "\udfff"}})):
        mutation, extra = (
            (DESCRIBE, {"description": value})
            if field == "description"
            else (UPDATE, {"nodeId": "t", "config": value})
        )
        # As JSON escapes it (httpx would send the text as UTF-8, which it cannot be).
        body = json.dumps({"query": mutation, "variables": {"i": {"workflowId": wid, **extra}}})
        answer = await client.post_raw(body.encode())
        codes = [e["extensions"]["code"] for e in answer.json()["errors"]]
        assert codes == ["VALIDATION"], (field, answer.text)
    await client.execute(RENAME, {"i": {"workflowId": wid, "name": "after"}})
    shown = await read(client, wid, 4)
    assert shown["name"] == "after" and shown["description"] == "a\ufffdb"
    assert shown["nodes"][0]["config"] == {"fields": {"x": "\ufffd"}}
    history = await client.execute(
        "query($id: ID!) { workflowHistory(id: $id) { nodes { version } } }", {"id": wid}
    )
    assert len(history["workflowHistory"]["nodes"]) == 4


async def test_malformed_requests_get_typed_errors_not_500(client: GraphQLClient) -> None:
    for query in ["{ workflows { nope } }", "mutation { createWorkflow }", "{{{"]:
        response = await client.raw(query)
        assert response.status_code in (200, 400), response.text
        codes = [e["extensions"]["code"] for e in response.json()["errors"]]
        assert codes and all(c == "VALIDATION" for c in codes)
    with pytest.raises(GraphQLError) as info:
        await client.execute("{ workflows(first: 0) { nodes { id } } }")
    assert info.value.codes == ["VALIDATION"]
    with pytest.raises(GraphQLError) as info:
        await client.execute('{ workflows(after: "garbage") { nodes { id } } }')
    assert info.value.codes == ["VALIDATION"]
    deep = b'{"query": "{ workflows { nodes { id } } }", "variables": ' + b"[" * 100_000
    response = await client.post_raw(deep + b"]" * 100_000 + b"}")
    assert response.status_code == 400, response.text  # was a 500 (RecursionError)


async def test_workflow_list_searches_by_name_and_pages_with_cursors(stack: Stack) -> None:
    client = await GraphQLClient.signed_up(stack.url)
    try:
        ids = [await create(client, f"{kind} {i}") for i in range(5) for kind in ("Sync", "Report")]
        for wid in ids:  # ten aggregates on several partitions: each read model row in place
            await read(client, wid, 1)
        query = """query($after: String, $s: String) {
          workflows(first: 2, after: $after, search: $s)
          { nodes { id name } pageInfo { hasNextPage endCursor } } }"""
        names: list[str] = []
        after = None
        while True:
            page = (await client.execute(query, {"after": after, "s": "sync"}))["workflows"]
            names += [n["name"] for n in page["nodes"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert names == [f"Sync {i}" for i in range(5)]
        everything = await client.execute("{ workflows(first: 200) { nodes { id } } }")
        assert [n["id"] for n in everything["workflows"]["nodes"]] == ids
    finally:
        await client.close()


async def test_history_lists_every_event_newest_first_with_actor(client: GraphQLClient) -> None:
    wid = await create(client)
    for i in range(4):
        await add(client, wid, name=f"n{i}")
    await read(client, wid, 5)
    query = """query($id: ID!, $after: String) { workflowHistory(id: $id, first: 2, after: $after)
      { nodes { version type actorId occurredAt } pageInfo { hasNextPage endCursor } } }"""
    versions: list[int] = []
    after = None
    while True:
        page = (await client.execute(query, {"id": wid, "after": after}))["workflowHistory"]
        versions += [n["version"] for n in page["nodes"]]
        assert all(n["actorId"] == client.actor for n in page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert versions == [5, 4, 3, 2, 1]


async def test_malformed_kafka_messages_are_rejected_and_change_nothing(
    client: GraphQLClient, stack: Stack
) -> None:
    wid = await create(client)
    await read(client, wid, 1)
    assert stack.settings.kafka_bootstrap
    producer = KafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap)
    for garbage in (b"", b"not json", b"[1]", b'{"type": "workflow.NodeAdded"}'):
        producer.send("autoops.workflow.events", key=wid.encode(), value=garbage)
    producer.flush()
    producer.close()
    await add(client, wid, name="after the garbage")
    workflow = await read(client, wid, 2)
    assert workflow["version"] == 2 and workflow["nodeCount"] == 1
    history = await client.execute(
        "query($id: ID!) { workflowHistory(id: $id) { nodes { version } } }", {"id": wid}
    )
    assert [n["version"] for n in history["workflowHistory"]["nodes"]] == [2, 1]


async def test_a_burst_larger_than_a_page_reaches_a_live_subscriber_in_order(
    client: GraphQLClient, stack: Stack
) -> None:
    wid = await create(client)
    await read(client, wid, 1)
    assert stack.settings.database_url
    store = WorkflowStore(env=eventsourcing_env_for(stack.settings.database_url))
    bus = CommandBus(store)
    bus.start()
    meta = c.Meta(actor_id=client.actor, workspace_id=client.workspace)
    try:
        async with client.subscribe(EVENTS, {"id": wid, "after": 1}) as events:
            futures = [
                bus.submit(c.AddNode(workflow_id=UUID(wid), node_type="data.transform"), meta)
                for _ in range(1200)
            ]
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            versions = [
                (await asyncio.wait_for(anext(events), 30))["workflowEvents"]["version"]
                for _ in range(1200)
            ]
    finally:
        bus.stop()
        store.close()
    assert versions == list(range(2, 1202))


async def test_subscribers_get_edits_straight_from_the_event_store(
    database_url: str, kafka_session: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    """With neither relay nor projector running, edits still reach subscribers at once: the
    api tails the event store itself (Kafka and the read models are not on this path)."""
    settings = stack_settings(database_url, kafka_session.url, redis_db(redis_url), tmp_path)
    with running_stack(settings, ("api",)) as alone:
        wait_until(lambda: http_answer("GET", f"{alone.url}/health/live"), 60, "api up")
        client = await GraphQLClient.signed_up(alone.url)
        try:
            wid = await create(client)
            async with client.subscribe(EVENTS, {"id": wid, "after": 0}) as events:
                first = await asyncio.wait_for(anext(events), 10)
                assert first["workflowEvents"]["version"] == 1
                add = """mutation($w: ID!)
                  { addNode(input: {workflowId: $w, type: "data.transform"}) { version } }"""
                await client.execute(add, {"w": wid})
                second = await asyncio.wait_for(anext(events), 10)
                assert (second["workflowEvents"]["version"], second["workflowEvents"]["type"]) == (
                    2,
                    "NodeAdded",
                )
        finally:
            await client.close()


async def test_node_types_list_their_schemas_and_validation_reports_every_problem(
    client: GraphQLClient,
) -> None:
    listed = (await client.execute("{ nodeTypes { type category pool configSchema } }"))[
        "nodeTypes"
    ]
    by_type = {t["type"]: t for t in listed}
    for expected in (
        "trigger.manual",
        "trigger.cron",
        "trigger.webhook",
        "control.if",
        "control.switch",
        "control.loop",
        "control.merge",
        "control.delay",
        "control.subworkflow",
        "control.stop",
        "http.request",
        "sql.query",
        "data.transform",
        "data.filter",
        "file.read",
        "file.write",
        "ai.llm",
        "ai.extract",
    ):
        assert expected in by_type, expected
    assert by_type["http.request"]["configSchema"]["required"] == ["url"]
    assert by_type["control.if"]["category"] == "control"

    wid = await create(client)
    start = (await add(client, wid, "trigger.manual"))["nodeId"]
    fetch = (await add(client, wid, "http.request"))["nodeId"]  # no url yet
    a, b, orphan = [(await add(client, wid, "data.transform"))["nodeId"] for _ in range(3)]
    beside = "{{ steps['" + fetch + "'].output }}"  # fetch runs beside it, not before
    reader = await add(client, wid, "data.transform", config={"fields": {"x": beside}})
    for source, target in ((start, fetch), (fetch, a), (a, b), (b, a), (start, reader["nodeId"])):
        await client.execute(
            CONNECT, {"i": {"workflowId": wid, "sourceId": source, "targetId": target}}
        )
    await read(client, wid, 12)
    query = """query($id: ID!, $v: Int) { validateWorkflow(id: $id, atLeastVersion: $v)
      { valid problems { code message nodeIds } } }"""
    report = (await client.execute(query, {"id": wid, "v": 12}))["validateWorkflow"]
    assert report["valid"] is False
    assert {(p["code"], tuple(p["nodeIds"])) for p in report["problems"]} == {
        ("CYCLE", tuple(sorted((a, b)))),
        ("UNREACHABLE", (orphan,)),
        ("INVALID_CONFIG", (fetch,)),
        ("NOT_UPSTREAM", (reader["nodeId"], fetch)),
    }
    assert any("url" in p["message"] for p in report["problems"])
