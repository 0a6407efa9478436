"""Several people on one workflow, through GraphQL on the real stack: node locks (contention,
LOCKED naming the holder, the holder's edits, break by an admin, a lease expiring with its
holder gone, recorded by the scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import picows
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from command_side.store import WorkflowStore
from infra import embedded
from infra.settings import eventsourcing_env_for
from tests import services
from tests.graphql_client import GraphQLClient, GraphQLError
from tests.stack import Stack, redis_db, running_stack, stack_settings

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
COMMENT = """mutation($i: AddCommentInput!) { addComment(input: $i) { version commentId } }"""
REPLY = """mutation($i: ReplyToCommentInput!) { replyToComment(input: $i) { version commentId } }"""
EDIT = "mutation($i: EditCommentInput!) { editComment(input: $i) { version } }"
DELETE = "mutation($i: CommentInput!) { deleteComment(input: $i) { version } }"
RESOLVE = "mutation($i: ThreadInput!) { resolveThread(input: $i) { version } }"
REOPEN = "mutation($i: ThreadInput!) { reopenThread(input: $i) { version } }"
REMOVE = "mutation($i: RemoveNodeInput!) { removeNode(input: $i) { version } }"
PRESENCE = """subscription($w: ID!, $n: ID) { presence(workflowId: $w, selectedNodeId: $n)
  { sessionId members { sessionId userId selectedNodeId cursor } } }"""
CURSOR = "mutation($i: UpdateCursorInput!) { updateCursor(input: $i) }"
COMMENTS = """query($w: ID!, $n: ID, $r: Boolean) {
  comments(workflowId: $w, nodeId: $n, includeResolved: $r) { id nodeId orphaned resolved
    resolvedBy comments { id author body mentions deleted deletedBy editedAt } } }"""


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
            AUTOOPS_PRESENCE_TIMEOUT_S="1.5",
            # Well above a cursor move's round trip on a loaded machine: moves in a row are
            # announced a few at a time, whatever the machine's pace.
            AUTOOPS_PRESENCE_THROTTLE_MS="500",
        )
        with running_stack(settings, ("relay", "projector", "scheduler", "api")) as running:
            running.wait_ready()
            yield running


async def join(owner: GraphQLClient, stack: Stack, role: str) -> GraphQLClient:
    member = await GraphQLClient.signed_up(stack.url)
    invited = await owner.execute(INVITE, {"e": member.email, "r": role})
    token = invited["inviteMember"]["invitationToken"]
    member.use((await member.execute(ACCEPT, {"t": token}))["acceptInvitation"])

    def listed(data: dict[str, Any]) -> bool:  # mentions are checked against this read model
        return any(m["userId"] == member.actor and m["status"] == "active" for m in data["members"])

    await owner.settled("{ members { userId status } }", {}, listed, "the new member")
    return member


@pytest.fixture
async def team(stack: Stack) -> AsyncIterator[tuple[GraphQLClient, GraphQLClient]]:
    """An owner and an editor of one workspace."""
    owner = await GraphQLClient.signed_up(stack.url)
    editor = await join(owner, stack, "EDITOR")
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
    v = locked["version"]
    seen = (await owner.caught_up(LOCKS, {"id": wid, "v": v}, v))["workflow"]
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

    def expired(data: dict[str, Any]) -> bool:
        nodes = data["workflowHistory"]["nodes"]
        return bool(nodes) and nodes[0]["type"] == "LockExpired"

    shown = await owner.settled(HISTORY, {"id": wid}, expired, "LockExpired in the history")
    history = shown["workflowHistory"]["nodes"]
    assert history[0]["actorId"] == "scheduler"
    v = history[0]["version"]
    seen = (await owner.caught_up(LOCKS, {"id": wid, "v": v}, v))["workflow"]
    assert seen["locks"] == []
    assert (await owner.execute(LOCK, {"i": b}))["lockNode"]["holder"] == owner.actor


async def test_a_client_op_id_names_one_operation_of_one_member(
    team: tuple[GraphQLClient, GraphQLClient],
) -> None:
    owner, editor = team
    wid = await two_nodes(owner)
    look = {"workflowId": wid, "nodeId": "a", "body": "look", "clientOpId": "k1"}
    first = (await owner.execute(COMMENT, {"i": look}))["addComment"]
    assert (await owner.execute(COMMENT, {"i": look}))["addComment"] == first  # a retry
    lock = {"workflowId": wid, "nodeId": "a", "clientOpId": "k1"}
    reused = await refused(owner, LOCK, {"i": lock})
    assert reused["code"] == "CONFLICT" and reused["currentVersion"] == first["version"]
    assert (await refused(editor, COMMENT, {"i": look}))["code"] == "CONFLICT"
    # Neither changed anything: the node is free, and the key still answers the comment.
    locked = (await editor.execute(LOCK, {"i": {**lock, "clientOpId": None}}))["lockNode"]
    assert locked["holder"] == editor.actor and locked["version"] == first["version"] + 1
    assert (await owner.execute(COMMENT, {"i": look}))["addComment"] == first


async def test_comment_threads_with_mentions_tombstones_resolution_and_orphans(
    stack: Stack, team: tuple[GraphQLClient, GraphQLClient]
) -> None:
    owner, editor = team
    viewer = await join(owner, stack, "VIEWER")
    try:
        wid = await two_nodes(owner)
        # Viewers review: they may comment.
        started = await viewer.execute(
            COMMENT, {"i": {"workflowId": wid, "nodeId": "a", "body": "Why *two* calls?",
                            "mentions": [editor.actor]}},
        )  # fmt: skip
        thread = started["addComment"]["commentId"]
        unknown = {"workflowId": wid, "body": "hi", "mentions": ["user-unknown"]}
        stranger = await refused(viewer, COMMENT, {"i": unknown})
        assert stranger["code"] == "VALIDATION"
        reply = await editor.execute(
            REPLY, {"i": {"workflowId": wid, "commentId": thread, "body": "Retries."}}
        )
        answer = reply["replyToComment"]["commentId"]
        theirs = {"workflowId": wid, "commentId": answer}
        assert (await refused(viewer, EDIT, {"i": {**theirs, "body": "x"}}))["code"] == "FORBIDDEN"
        assert (await refused(viewer, DELETE, {"i": theirs}))["code"] == "FORBIDDEN"
        # An editor edits the workflow, not other people's words.
        first_comment = {"workflowId": wid, "commentId": thread}
        assert (await refused(editor, DELETE, {"i": first_comment}))["code"] == "FORBIDDEN"
        assert (await refused(editor, EDIT, {"i": {**first_comment, "body": "x"}}))[
            "code"
        ] == "FORBIDDEN"
        await editor.execute(EDIT, {"i": {**theirs, "body": "Retries, see node b."}})
        await owner.execute(DELETE, {"i": theirs})  # an admin (the owner) may delete it
        resolved = await viewer.execute(RESOLVE, {"i": {"workflowId": wid, "threadId": thread}})
        version = resolved["resolveThread"]["version"]
        await owner.caught_up(LOCKS, {"id": wid, "v": version}, version)  # read model caught up
        assert (await owner.execute(COMMENTS, {"w": wid}))["comments"] == []
        [seen] = (await owner.execute(COMMENTS, {"w": wid, "n": "a", "r": True}))["comments"]
        assert seen["resolved"] and seen["resolvedBy"] == viewer.actor
        first, tombstone = seen["comments"]
        assert first["author"] == viewer.actor and first["mentions"] == [editor.actor]
        assert tombstone == {"id": answer, "author": editor.actor, "body": None, "mentions": [],
                             "deleted": True, "deletedBy": owner.actor,
                             "editedAt": tombstone["editedAt"]}  # fmt: skip
        await editor.execute(REOPEN, {"i": {"workflowId": wid, "threadId": thread}})
        removed = await owner.execute(REMOVE, {"i": {"workflowId": wid, "nodeId": "a"}})
        version = removed["removeNode"]["version"]
        await owner.caught_up(LOCKS, {"id": wid, "v": version}, version)
        [orphan] = (await owner.execute(COMMENTS, {"w": wid}))["comments"]
        assert orphan["id"] == thread and orphan["orphaned"] and not orphan["resolved"]
        # A new node given the old id starts without the old node's threads.
        added = await owner.execute(
            ADD, {"i": {"workflowId": wid, "type": "data.transform", "nodeId": "a"}}
        )
        version = added["addNode"]["version"]
        await owner.caught_up(LOCKS, {"id": wid, "v": version}, version)
        assert (await owner.execute(COMMENTS, {"w": wid, "n": "a"}))["comments"] == []
        [still] = (await owner.execute(COMMENTS, {"w": wid}))["comments"]
        assert still["id"] == thread and still["orphaned"]
    finally:
        await viewer.close()


async def next_update(stream: AsyncIterator[dict[str, Any]], want: Any) -> dict[str, Any]:
    """The first presence update for which `want(members)` holds."""

    async def scan() -> dict[str, Any]:
        async for data in stream:
            if want(data["presence"]["members"]):
                return dict(data["presence"])
        raise AssertionError("the subscription ended")

    return await asyncio.wait_for(scan(), 15)


async def test_presence_spans_two_api_processes_and_drops_a_silent_member(
    stack: Stack, team: tuple[GraphQLClient, GraphQLClient]
) -> None:
    owner, editor = team
    wid = await two_nodes(owner)
    second = dataclasses.replace(stack.settings, api_port=embedded.free_port())
    with running_stack(second, ("api",)) as other:
        other.wait_ready()
        elsewhere = GraphQLClient(other.url)
        elsewhere.access_token = editor.access_token  # the editor, on the other api process
        try:
            async with owner.subscribe(PRESENCE, {"w": wid}) as mine:
                first = await next_update(mine, lambda m: len(m) == 1)
                assert first["members"][0]["userId"] == owner.actor
                async with elsewhere.subscribe(PRESENCE, {"w": wid, "n": "a"}) as theirs:
                    joined = await next_update(theirs, lambda m: len(m) == 2)
                    both = await next_update(mine, lambda m: len(m) == 2)
                    [peer] = [m for m in both["members"] if m["userId"] == editor.actor]
                    assert peer["selectedNodeId"] == "a" and peer["cursor"] is None
                    session = joined["sessionId"]
                    # Many moves, few announcements: the last position arrives.
                    for x in range(30):
                        await elsewhere.execute(
                            CURSOR, {"i": {"workflowId": wid, "sessionId": session,
                                           "x": x, "y": 5, "selectedNodeId": "b"}},
                        )  # fmt: skip
                    seen = []

                    def moved(members: list[dict[str, Any]]) -> bool:
                        peer = next(m for m in members if m["userId"] == editor.actor)
                        seen.append(peer["cursor"])
                        return peer["cursor"] == {"x": 29.0, "y": 5.0}

                    last = await next_update(mine, moved)
                    assert len(seen) < 30
                    assert [m["selectedNodeId"] for m in last["members"]
                            if m["userId"] == editor.actor] == ["b"]  # fmt: skip
                    stranger = {"workflowId": wid, "sessionId": session, "x": 1, "y": 1}
                    assert (await refused(owner, CURSOR, {"i": stranger}))["code"] == "NOT_FOUND"
                    # The other api process dies without a word: the editor drops out.
                    other.supervisor.children["api"].kill()
                    alone = await next_update(mine, lambda m: len(m) == 1)
                    assert alone["members"][0]["userId"] == owner.actor
        finally:
            await elsewhere.close()


async def test_update_cursor_changes_only_what_it_names(
    team: tuple[GraphQLClient, GraphQLClient],
) -> None:
    owner, _ = team
    wid = await two_nodes(owner)
    async with owner.subscribe(PRESENCE, {"w": wid, "n": "a"}) as mine:
        session = (await next_update(mine, lambda m: len(m) == 1))["sessionId"]

        async def update(**fields: Any) -> None:
            move = {"workflowId": wid, "sessionId": session, **fields}
            assert (await owner.execute(CURSOR, {"i": move}))["updateCursor"] is True

        async def me_when(want: Any) -> dict[str, Any]:
            [me] = (await next_update(mine, lambda m: want(m[0])))["members"]
            return dict(me)

        # A cursor move naming no selection leaves the node selected, for everyone.
        await update(x=3, y=4)
        me = await me_when(lambda m: m["cursor"] is not None)
        assert (me["selectedNodeId"], me["cursor"]) == ("a", {"x": 3.0, "y": 4.0})
        # A null selection deselects and leaves the cursor; null x and y take the cursor away.
        await update(selectedNodeId=None)
        assert (await me_when(lambda m: m["selectedNodeId"] is None))["cursor"] == {
            "x": 3.0,
            "y": 4.0,
        }
        await update(x=None, y=None)
        assert (await me_when(lambda m: m["cursor"] is None))["selectedNodeId"] is None
        half = {"workflowId": wid, "sessionId": session, "x": 1}  # a cursor needs both
        assert (await refused(owner, CURSOR, {"i": half}))["code"] == "VALIDATION"


class Unanswering(picows.WSListener):
    """A client whose network goes quiet with its process still there: it subscribes, answers
    the server's pings until `answering` is cleared, then nothing (its socket stays open)."""

    def __init__(self, token: str, workflow_id: str) -> None:
        self.init = json.dumps(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        ).encode()
        self.subscribe = json.dumps(
            {"id": "1", "type": "subscribe",
             "payload": {"query": PRESENCE, "variables": {"w": workflow_id}}}
        ).encode()  # fmt: skip
        self.subscribed = asyncio.Event()
        self.closed = asyncio.Event()
        self.answering = True

    def on_ws_connected(self, transport: Any) -> None:
        transport.send(picows.WSMsgType.TEXT, self.init)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type == picows.WSMsgType.PING and self.answering:
            transport.send_pong(frame.get_payload_as_bytes())
        text = frame.msg_type == picows.WSMsgType.TEXT
        if text and json.loads(frame.get_payload_as_bytes()).get("type") == "connection_ack":
            transport.send(picows.WSMsgType.TEXT, self.subscribe)
            self.subscribed.set()

    def on_ws_disconnected(self, transport: Any) -> None:
        self.closed.set()


async def test_a_member_whose_connection_stops_answering_drops_out(
    stack: Stack, team: tuple[GraphQLClient, GraphQLClient]
) -> None:
    owner, editor = team
    wid = await two_nodes(owner)
    assert editor.access_token
    quiet = Unanswering(editor.access_token, wid)
    url = stack.url.replace("http", "ws", 1) + "/graphql"
    transport, _ = await picows.ws_connect(
        lambda: quiet,
        url,
        enable_auto_pong=False,
        extra_headers={"Sec-WebSocket-Protocol": "graphql-transport-ws"},
    )
    try:
        await asyncio.wait_for(quiet.subscribed.wait(), 10)
        async with owner.subscribe(PRESENCE, {"w": wid}) as mine:
            await next_update(mine, lambda m: len(m) == 2)
            quiet.answering = False
            # Its api process lives and keeps its session fresh while the subscription does:
            # the unanswered pings end the connection, and with it the session.
            alone = await next_update(mine, lambda m: len(m) == 1)
            assert alone["members"][0]["userId"] == owner.actor
        await asyncio.wait_for(quiet.closed.wait(), 10)  # closed by the server
    finally:
        transport.disconnect()


EVENTS = """subscription($id: ID!) { workflowEvents(workflowId: $id, afterVersion: 0)
  { version type payload } }"""
UPDATE = "mutation($i: UpdateNodeInput!) { updateNode(input: $i) { version } }"
CONNECT = "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { version } }"
NODE_IDS = ["n1", "n2", "n3"]
OPERATION = st.tuples(
    st.integers(0, 2),  # which client
    st.sampled_from(["add", "move", "rename", "remove", "connect", "lock", "unlock", "comment"]),
    st.sampled_from(NODE_IDS),
    st.sampled_from(NODE_IDS),
    st.integers(0, 500),
)


class Replica:
    """A client's copy of the workflow, folded from the events its subscription delivers."""

    def __init__(self) -> None:
        self.version = 0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, tuple[str, str]] = {}
        self.locks: dict[str, tuple[str, float]] = {}  # node → holder, lease end
        self.threads: dict[str, tuple[str | None, bool]] = {}  # thread → node, orphaned
        self.comments: dict[str, str] = {}  # comment → its thread

    def apply(self, event: dict[str, Any]) -> None:
        assert event["version"] == self.version + 1, "a gap or a repeat in the stream"
        self.version = event["version"]
        kind, d = event["type"], event["payload"]
        if kind == "NodeAdded":
            self.nodes[d["node_id"]] = {"type": d["node_type"], "name": d["name"],
                                        "x": d["x"], "y": d["y"]}  # fmt: skip
        elif kind == "NodeUpdated" and d.get("name") is not None:
            self.nodes[d["node_id"]]["name"] = d["name"]
        elif kind == "NodeMoved":
            self.nodes[d["node_id"]].update(x=d["x"], y=d["y"])
        elif kind == "NodeRemoved":
            del self.nodes[d["node_id"]]
            for edge_id in d["removed_edge_ids"]:
                self.edges.pop(edge_id, None)
            self.locks.pop(d["node_id"], None)
            for thread_id, (node_id, _) in self.threads.items():
                if node_id == d["node_id"]:
                    self.threads[thread_id] = (node_id, True)
        elif kind == "NodesConnected":
            self.edges[d["edge_id"]] = (d["source_id"], d["target_id"])
        elif kind == "NodesDisconnected":
            self.edges.pop(d["edge_id"], None)
        elif kind == "NodeLocked":
            self.locks[d["node_id"]] = (d["holder"], d["expires_at"])
        elif kind == "LockRenewed":
            self.locks[d["node_id"]] = (self.locks[d["node_id"]][0], d["expires_at"])
        elif kind in ("NodeUnlocked", "LockBroken", "LockExpired"):
            self.locks.pop(d["node_id"], None)
        elif kind == "CommentAdded":
            if d["thread_id"] == d["comment_id"]:
                self.threads[d["thread_id"]] = (d["node_id"], False)
            self.comments[d["comment_id"]] = d["thread_id"]

    def state(self) -> tuple[Any, ...]:
        edges = sorted(self.edges.items())
        return self.version, self.nodes, edges, self.locks, self.threads, self.comments


async def _perform(client: GraphQLClient, wid: str, op: tuple[int, str, str, str, int]) -> None:
    _, kind, node, other, n = op
    target = {"workflowId": wid, "nodeId": node}
    calls = {
        "add": (ADD, {**target, "type": "data.transform", "x": n, "y": n}),
        "move": (MOVE, {**target, "x": n, "y": -n}),
        "rename": (UPDATE, {**target, "name": f"name {n}"}),
        "remove": (REMOVE, target),
        "connect": (CONNECT, {"workflowId": wid, "sourceId": node, "targetId": other}),
        "lock": (LOCK, {**target, "ttlSeconds": 60}),
        "unlock": (UNLOCK, target),
        "comment": (COMMENT, {**target, "body": f"note {n}"}),
    }
    query, variables = calls[kind]
    try:
        await client.execute(query, {"i": variables})
    except GraphQLError as refused:  # a real conflict, a lock, a missing node: a typed no
        assert set(refused.codes) <= {"NOT_FOUND", "VALIDATION", "LOCKED", "CONFLICT"}, refused


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(operations=st.lists(OPERATION, min_size=5, max_size=24))
def test_concurrent_editors_end_with_the_same_workflow_as_the_store(
    stack: Stack, operations: list[tuple[int, str, str, str, int]]
) -> None:
    """Three members edit one workflow at once, each following `workflowEvents`; afterwards
    every client's copy, built from its own stream, equals the others' and the aggregate
    folded from the event store."""

    async def scenario() -> None:
        owner = await GraphQLClient.signed_up(stack.url)
        members = [owner, await join(owner, stack, "EDITOR"), await join(owner, stack, "ADMIN")]
        wid = (await owner.execute(CREATE, {"i": {"name": "Together"}}))["createWorkflow"]
        wid = wid["workflowId"]
        for node_id in NODE_IDS:  # a graph to fight over (an `add` re-adds a removed one)
            await owner.execute(ADD, {"i": {"workflowId": wid, "nodeId": node_id,
                                            "type": "data.transform"}})  # fmt: skip
        replicas = [Replica() for _ in members]
        try:
            async with contextlib.AsyncExitStack() as streams:
                feeds = [await streams.enter_async_context(m.subscribe(EVENTS, {"id": wid}))
                         for m in members]  # fmt: skip

                async def edit(i: int) -> None:
                    for op in (o for o in operations if o[0] == i):
                        await _perform(members[i], wid, op)

                await asyncio.gather(*(edit(i) for i in range(len(members))))

                def fold() -> Any:  # off the loop: the clients must go on answering pings
                    env = eventsourcing_env_for(stack.settings.database_url)
                    store = WorkflowStore(env=env)
                    try:
                        return store.load(UUID(wid))
                    finally:
                        store.close()

                truth = await asyncio.to_thread(fold)

                async def follow(replica: Replica, feed: AsyncIterator[dict[str, Any]]) -> None:
                    while replica.version < truth.version:
                        replica.apply((await anext(feed))["workflowEvents"])

                await asyncio.wait_for(
                    asyncio.gather(*(follow(r, f) for r, f in zip(replicas, feeds, strict=True))),
                    30,
                )
            graph = truth.graph()
            expected = (
                truth.version,
                {k: {"type": v["type"], "name": v["name"], "x": v["x"], "y": v["y"]}
                 for k, v in graph["nodes"].items()},
                sorted((k, (v["source"], v["target"])) for k, v in graph["edges"].items()),
                {k: (v["holder"], v["expires_at"]) for k, v in truth.locks.items()},
                {k: (v["node_id"], v.get("orphaned", False))
                 for k, v in vars(truth).get("threads", {}).items()},
                {k: v["thread_id"] for k, v in vars(truth).get("comments", {}).items()},
            )  # fmt: skip
            for replica in replicas:
                assert replica.state() == expected
        finally:
            for member in members:
                await member.close()

    asyncio.run(scenario())
