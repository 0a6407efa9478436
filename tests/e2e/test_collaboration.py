"""Several people on one workflow, through GraphQL on the real stack: node locks (contention,
LOCKED naming the holder, the holder's edits, break by an admin, a lease expiring with its
holder gone, recorded by the scheduler)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import embedded
from tests import services
from tests.graphql_client import GraphQLClient, GraphQLError
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import eventually

INVITE = """mutation($e: String!, $r: Role!)
  { inviteMember(input: {email: $e, role: $r}) { memberId invitationToken } }"""
ACCEPT = """mutation($t: String!) { acceptInvitation(input: {token: $t})
  { accessToken refreshToken expiresIn user { id email } workspace { id name role } } }"""
CREATE = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { workflowId version } }"
ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { version nodeId } }"
MOVE = "mutation($i: MoveNodeInput!) { moveNode(input: $i) { version } }"
LOCK = """mutation($i: LockNodeInput!) { lockNode(input: $i)
  { workflowId version nodeId holder expiresAt } }"""
RENEW = "mutation($i: NodeLockInput!) { renewLock(input: $i) { holder expiresAt } }"
UNLOCK = "mutation($i: NodeLockInput!) { unlockNode(input: $i) { version } }"
BREAK = "mutation($i: NodeLockInput!) { breakLock(input: $i) { holder expiresAt } }"
LOCKS = """query($id: ID!, $v: Int) { workflow(id: $id, atLeastVersion: $v)
  { version locks { nodeId holder expiresAt } } }"""
HISTORY = "query($id: ID!) { workflowHistory(id: $id) { nodes { version type actorId } } }"


@pytest.fixture(scope="module")
def stack(
    pg_admin_url: str,
    kafka_session: embedded.Service,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with services.fresh_database(pg_admin_url) as database:
        settings = stack_settings(
            database,
            kafka_session.url,
            redis_db(redis_url),
            Path(tmp_path_factory.mktemp("stack")),
            AUTOOPS_SCHEDULER_INTERVAL_S="0.2",
        )
        with running_stack(settings, ("relay", "projector", "scheduler", "api")) as running:
            running.wait_ready()
            yield running


@pytest.fixture
async def team(stack: Stack) -> AsyncIterator[tuple[GraphQLClient, GraphQLClient]]:
    """An owner and an editor of one workspace."""
    owner = await GraphQLClient.signed_up(stack.url)
    editor = await GraphQLClient.signed_up(stack.url)
    invited = await owner.execute(INVITE, {"e": editor.email, "r": "EDITOR"})
    token = invited["inviteMember"]["invitationToken"]
    editor.use((await editor.execute(ACCEPT, {"t": token}))["acceptInvitation"])
    yield owner, editor
    await owner.close()
    await editor.close()


async def refused(client: GraphQLClient, query: str, variables: Any) -> dict[str, Any]:
    """The one error of a refused call, extensions included."""
    with pytest.raises(GraphQLError) as info:
        await client.execute(query, variables)
    [error] = info.value.errors
    return dict(error["extensions"])


async def two_nodes(client: GraphQLClient) -> str:
    wid = (await client.execute(CREATE, {"i": {"name": "Shared"}}))["createWorkflow"]["workflowId"]
    for node_id in ("a", "b"):
        node = {"workflowId": wid, "type": "data.transform", "nodeId": node_id}
        await client.execute(ADD, {"i": node})
    return str(wid)


async def test_a_locked_node_refuses_others_until_its_holder_lets_go_or_an_admin_breaks_it(
    team: tuple[GraphQLClient, GraphQLClient],
) -> None:
    owner, editor = team
    wid = await two_nodes(owner)
    a, b = {"workflowId": wid, "nodeId": "a"}, {"workflowId": wid, "nodeId": "b"}
    locked = (await owner.execute(LOCK, {"i": {**a, "ttlSeconds": 60}}))["lockNode"]
    assert locked["holder"] == owner.actor and locked["nodeId"] == "a"
    moved = await refused(editor, MOVE, {"i": {**a, "x": 1, "y": 1}})
    assert moved["code"] == "LOCKED" and moved["holder"] == owner.actor
    assert moved["expiresAt"][:19] == locked["expiresAt"][:19] and moved["nodeId"] == "a"
    assert (await refused(editor, LOCK, {"i": a}))["code"] == "LOCKED"
    assert (await refused(editor, UNLOCK, {"i": a}))["code"] == "LOCKED"
    await editor.execute(MOVE, {"i": {**b, "x": 2, "y": 2}})  # other nodes stay open
    await owner.execute(MOVE, {"i": {**a, "x": 3, "y": 3}})  # the holder edits
    seen = (await owner.execute(LOCKS, {"id": wid, "v": locked["version"]}))["workflow"]
    assert seen["locks"] == [
        {"nodeId": "a", "holder": owner.actor, "expiresAt": seen["locks"][0]["expiresAt"]}
    ]
    assert (await owner.execute(RENEW, {"i": a}))["renewLock"]["holder"] == owner.actor
    assert (await refused(editor, BREAK, {"i": a}))["code"] == "FORBIDDEN"  # admins only
    broken = (await owner.execute(BREAK, {"i": a}))["breakLock"]
    assert broken == {"holder": owner.actor, "expiresAt": None}
    await editor.execute(LOCK, {"i": a})
    await editor.execute(UNLOCK, {"i": a})
    assert (await refused(editor, UNLOCK, {"i": a}))["code"] == "VALIDATION"


async def test_a_lease_runs_out_with_its_holder_gone_and_the_scheduler_records_it(
    team: tuple[GraphQLClient, GraphQLClient],
) -> None:
    owner, editor = team
    wid = await two_nodes(owner)
    b = {"workflowId": wid, "nodeId": "b"}
    await editor.execute(LOCK, {"i": {**b, "ttlSeconds": 1}})
    await editor.close()  # the holder vanishes

    async def expired() -> list[dict[str, Any]] | None:
        nodes = (await owner.execute(HISTORY, {"id": wid}))["workflowHistory"]["nodes"]
        return nodes if nodes and nodes[0]["type"] == "LockExpired" else None

    history = await eventually(expired, 20, "LockExpired in the history")
    assert history[0]["actorId"] == "scheduler"
    seen = (await owner.execute(LOCKS, {"id": wid, "v": history[0]["version"]}))["workflow"]
    assert seen["locks"] == []
    assert (await owner.execute(LOCK, {"i": b}))["lockNode"]["holder"] == owner.actor
