"""Shared delivery of `workflowEvents`: a selection of plain fields is rendered once per event
and api process, and every subscriber gets, byte for byte, what Strawberry's own execution of
the same selection sends."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.graphql_client import GraphQLClient
from tests.stack import Stack

FIELDS = ["workflowId", "version", "type", "actorId", "occurredAt", "payload", "__typename"]
CREATE = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { workflowId } }"
ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }"
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"
UPDATE = "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { version } }"
EVENTS = 4  # created, node added, moved, renamed

Selection = list[tuple[str, str | None]]


def document(selection: Selection, root_alias: str | None, *, ordinary: bool) -> str:
    """The subscription for `selection`; `ordinary` adds a no-op directive, which keeps it
    off the shared path (a directive could make results differ per subscriber)."""
    fields = " ".join(
        f"{alias + ': ' if alias else ''}{name}"
        + (" @include(if: true)" if ordinary and i == 0 else "")
        for i, (name, alias) in enumerate(selection)
    )
    root = f"{root_alias}: " if root_alias else ""
    return (
        "subscription($id: ID!, $after: Int) { "
        f"{root}workflowEvents(workflowId: $id, afterVersion: $after) {{ {fields} }} }}"
    )


@pytest.fixture(scope="module")
def workflow(stack: Stack) -> Iterator[tuple[str, str]]:
    """A workflow whose events carry nested, non-ASCII and numeric payloads."""

    async def make() -> tuple[str, str]:
        client = await GraphQLClient.signed_up(stack.url)
        try:
            data = await client.execute(CREATE, {"i": {"name": "Fakturen „Q3“ ✓"}})
            wid = data["createWorkflow"]["workflowId"]
            config = {"method": "POST", "url": 'https://example.com/ä?x=1&y="2"'}
            node = {"workflowId": wid, "type": "http.request", "name": "Zahlung 💶",
                    "config": config, "x": 1.5, "y": -2}  # fmt: skip
            node_id = (await client.execute(ADD, {"i": node}))["addNode"]["nodeId"]
            await client.execute(MOVE, {"i": {"workflowId": wid, "nodeId": node_id,
                                              "x": 10.25, "y": 1e6}})  # fmt: skip
            await client.execute(UPDATE, {"i": {"workflowId": wid, "nodeId": node_id,
                                                "name": "line\nbreak \\ tab\t"}})  # fmt: skip
            assert client.access_token
            return wid, client.access_token
        finally:
            await client.close()

    yield asyncio.run(make())


async def shared_messages(url: str, kind: str = "shared") -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    found = re.search(rf"^autoops_subscription_{kind}_messages_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def frames(
    url: str, token: str, queries: dict[str, str], variables: dict[str, Any]
) -> dict[str, list[str]]:
    """The raw `next` frames of each subscription (by operation id), all on one socket."""
    got: dict[str, list[str]] = {op: [] for op in queries}
    async with websockets.connect(url.replace("http", "ws", 1) + "/graphql",
                                  subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]  # fmt: skip
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {token}"}}))  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for op, query in queries.items():
            payload = {"query": query, "variables": variables}
            await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        while any(len(texts) < EVENTS - variables["after"] for texts in got.values()):
            raw = await asyncio.wait_for(ws.recv(), 10)
            message = json.loads(raw)
            assert message["type"] == "next", message
            got[message["id"]].append(str(raw))
    return got


SELECTIONS = st.lists(
    st.sampled_from(FIELDS), min_size=1, max_size=len(FIELDS), unique=True
).flatmap(
    lambda names: st.tuples(
        *(st.tuples(st.just(n), st.none() | st.just(f"k{i}")) for i, n in enumerate(names))
    )
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking waits out timeouts
)
@given(
    selection=SELECTIONS,
    root_alias=st.none() | st.just("events"),
    after=st.integers(min_value=0, max_value=EVENTS - 1),
)
def test_a_shared_rendering_is_byte_for_byte_what_strawberry_sends(
    stack: Stack,
    workflow: tuple[str, str],
    selection: tuple[tuple[str, str | None], ...],
    root_alias: str | None,
    after: int,
) -> None:
    wid, token = workflow

    async def scenario() -> None:
        before = await shared_messages(stack.url)
        queries = {
            "shared": document(list(selection), root_alias, ordinary=False),
            "ordinary": document(list(selection), root_alias, ordinary=True),
        }
        got = await frames(stack.url, token, queries, {"id": wid, "after": after})
        assert len(got["shared"]) == EVENTS - after
        assert [t.replace('"id":"shared"', '"id":"ordinary"', 1) for t in got["shared"]] == got[
            "ordinary"
        ]
        # The first went the shared way, the other through Strawberry's execution.
        assert await shared_messages(stack.url) - before == len(got["shared"])

    asyncio.run(scenario())


async def test_live_events_are_pushed_from_the_tail_in_order(stack: Stack) -> None:
    """A subscriber waiting for live events is sent them by the event tail itself (its task
    is not woken for each): they arrive in version order, once each."""
    client = await GraphQLClient.signed_up(stack.url)
    try:
        wid = (await client.execute(CREATE, {"i": {"name": "live"}}))["createWorkflow"]
        wid = wid["workflowId"]
        before = await shared_messages(stack.url, "pushed")
        query = document([("version", None), ("type", None)], None, ordinary=False)
        versions: list[int] = []
        async with client.subscribe(query, {"id": wid, "after": 0}) as events:
            first = await asyncio.wait_for(anext(events), 10)
            versions.append(first["workflowEvents"]["version"])
            for i in range(6):  # one at a time: each finds the subscriber waiting
                node = {"workflowId": wid, "type": "data.transform", "name": f"n{i}"}
                await client.execute(ADD, {"i": node})
                event = await asyncio.wait_for(anext(events), 10)
                versions.append(event["workflowEvents"]["version"])
        assert versions == list(range(1, 8))
        # Pushed unless the subscriber's access check fell due (every 5 s) in between.
        assert await shared_messages(stack.url, "pushed") - before >= 3
    finally:
        await client.close()
