"""Identity and security on the whole stack: sign-in, tokens, roles, isolation, throttling."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pyotp
import pytest
import redis
import websockets

from infra import embedded
from tests.graphql_client import AUTH_FIELDS, PASSWORD, GraphQLClient, GraphQLError
from tests.schema_calls import calls
from tests.stack import Stack, running_stack
from tests.waiting import eventually
from web.auth.permissions import PERMISSIONS, PUBLIC

ME = "{ me { id email displayName totpEnabled workspace { id name role } } }"
MEMBERS = "{ members { id userId email role status } }"
#: Needs a live session and reads no read model (so it cannot wait on the projector).
NODE_TYPES = "{ nodeTypes { type } }"
CREATE = 'mutation { createWorkflow(input: {name: "Secret plan"}) { workflowId } }'
REFRESH = """mutation($t: String!) { refreshToken(input: {refreshToken: $t})
  { accessToken refreshToken expiresIn user { id email } workspace { id name role } } }"""
INVITE = """mutation($e: String!, $r: Role!)
  { inviteMember(input: {email: $e, role: $r}) { memberId invitationToken } }"""
ACCEPT = f"""mutation($t: String!) {{ acceptInvitation(input: {{token: $t}})
  {{ {AUTH_FIELDS} }} }}"""
CHANGE_ROLE = """mutation($m: ID!, $r: Role!)
  { changeMemberRole(input: {memberId: $m, role: $r}) { memberId role } }"""
REMOVE = "mutation($m: ID!) { removeMember(input: {memberId: $m}) { memberId } }"
SWITCH = """mutation($w: ID!) { switchWorkspace(workspaceId: $w)
  { accessToken refreshToken expiresIn user { id email } workspace { id name role } } }"""


async def codes_of(client: GraphQLClient, query: str, variables: Any = None) -> list[str]:
    with pytest.raises(GraphQLError) as info:
        await client.execute(query, variables)
    return [str(c) for c in info.value.codes]


async def test_sign_up_then_me_shows_the_account_and_its_workspace(client: GraphQLClient) -> None:
    def complete(data: dict[str, Any]) -> bool:
        # The workspace's name comes with the membership, projected apart from the user.
        return bool(data["me"] and (data["me"]["workspace"] or {}).get("name"))

    me = (await client.settled(ME, {}, complete, "profile"))["me"]  # `me` waits 2 s at most
    assert me["id"] == client.actor and me["email"] == client.email
    assert me["workspace"] == {"id": client.workspace, "name": "Tests", "role": "OWNER"}
    assert me["totpEnabled"] is False


def test_every_root_field_is_guarded_and_named_in_the_permission_table() -> None:
    from infra.settings import load_settings
    from web.auth.permissions import Permitted
    from web.graphql.schema import build_schema

    schema = build_schema(load_settings({}))
    fields = set()
    for root in ("Query", "Mutation", "Subscription"):
        for graphql_name, field in schema._schema.get_type(root).fields.items():  # type: ignore[union-attr]
            name = f"{root}.{graphql_name}"
            fields.add(name)
            definition = field.extensions["strawberry-definition"]
            assert Permitted in definition.permission_classes, f"{name} has no permission check"
    assert fields == set(PERMISSIONS), "the permission table and the schema disagree"


async def test_every_non_public_field_refuses_anonymous_callers(stack: Stack) -> None:
    anonymous = GraphQLClient(stack.url)
    try:
        for call in calls():
            if PERMISSIONS[call.name] == PUBLIC or call.root == "Subscription":
                continue
            assert await codes_of(anonymous, call.document) == ["UNAUTHENTICATED"], call.name
    finally:
        await anonymous.close()


async def _ws_rejects(url: str, init: dict[str, Any], origin: str | None = None) -> int | None:
    """The close code of a refused connection (4403), or the HTTP status of a refused
    handshake."""
    try:
        return await _ws_closes(url, init, origin)
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


async def _ws_closes(url: str, init: dict[str, Any], origin: str | None) -> int | None:
    async with websockets.connect(
        url.replace("http", "ws", 1) + "/graphql",
        subprotocols=["graphql-transport-ws"],
        origin=origin,  # type: ignore[arg-type]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code if closed.value.rcvd else None


async def test_subscriptions_need_a_valid_token_at_connection(stack: Stack) -> None:
    assert await _ws_rejects(stack.url, {}) == 4403
    assert await _ws_rejects(stack.url, {"Authorization": "Bearer forged.token.here"}) == 4403
    assert await _ws_rejects(stack.url, {"Authorization": "Basic dXNlcjpwYXNz"}) == 4403


async def test_websockets_from_a_foreign_origin_are_refused(client: GraphQLClient) -> None:
    init = {"Authorization": f"Bearer {client.access_token}"}
    assert await _ws_rejects(client.base_url, init, origin="https://evil.example") in (403, 4403)


async def test_bad_tokens_over_http_are_unauthenticated(client: GraphQLClient) -> None:
    assert client.access_token
    header, body, _ = client.access_token.split(".")
    for bad in (f"{header}.{body}.AAAA", f"{header}.{body}.", "Bearer", "x.y.z"):
        response = await client._http.post(
            "/graphql",
            json={"query": "{ workflows { nodes { id } } }"},
            headers={"authorization": f"Bearer {bad}"},
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", bad


async def test_the_api_refuses_tokens_signed_right_but_wrong_in_any_claim(
    client: GraphQLClient, stack: Stack
) -> None:
    """Tokens made with the api's own secret, each broken in one way (the attacker who
    knows the format, or replays an old token)."""
    secret = (stack.settings.data_dir / "jwt-secret").read_text().strip()
    good = jwt.decode(client.access_token or "", options={"verify_signature": False})
    now = int(time.time())
    variants = {
        "expired": {**good, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600},
        "not yet valid": {**good, "nbf": now + 3600, "iat": now + 3600, "exp": now + 7200},
        "other audience": {**good, "aud": "another-api"},
        "other issuer": {**good, "iss": "someone-else"},
        "no workspace": {k: v for k, v in good.items() if k != "wid"},
    }
    tokens = {
        name: jwt.encode(claims, secret, algorithm="HS256") for name, claims in variants.items()
    }
    unsigned = jwt.encode(good, None, algorithm="none")
    tokens["alg none"] = unsigned
    tokens["HS512"] = jwt.encode(good, secret * 2, algorithm="HS512")
    query = {"query": "{ workflows { nodes { id } } }"}
    for name, token in tokens.items():
        response = await client._http.post(
            "/graphql", json=query, headers={"authorization": f"Bearer {token}"}
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", name
    control = jwt.encode(good, secret, algorithm="HS256")
    response = await client._http.post(
        "/graphql", json=query, headers={"authorization": f"Bearer {control}"}
    )
    assert "errors" not in response.json()  # the same claims, signed right, are accepted


async def test_no_id_of_another_workspace_is_reachable_through_any_field(stack: Stack) -> None:
    alice = await GraphQLClient.signed_up(stack.url)
    mallory = await GraphQLClient.signed_up(stack.url)
    try:
        wid = (await alice.execute(CREATE))["createWorkflow"]["workflowId"]
        add = """mutation($w: ID!)
          { addNode(input: {workflowId: $w, type: "data.transform"}) { nodeId } }"""
        node = (await alice.execute(add, {"w": wid}))["addNode"]["nodeId"]
        other = (await alice.execute(add, {"w": wid}))["addNode"]["nodeId"]
        connect = """mutation($w: ID!, $s: ID!, $t: ID!)
          { connectNodes(input: {workflowId: $w, sourceId: $s, targetId: $t}) { edgeId } }"""
        edge = (await alice.execute(connect, {"w": wid, "s": node, "t": other}))["connectNodes"]
        aliens = {
            "id": wid,
            "workflowId": wid,
            "nodeId": node,
            "sourceId": node,
            "targetId": other,
            "edgeId": edge["edgeId"],
            "memberId": alice.actor,
            "workspaceId": alice.workspace,
        }
        secrets = [wid, alice.workspace, alice.actor, alice.email, "Secret plan"]
        for call in calls(aliens):
            names_alien = any(f"{arg}:" in call.document for arg in aliens)
            if call.root == "Subscription":
                with pytest.raises(GraphQLError) as info:
                    async with mallory.subscribe(call.document) as events:
                        await asyncio.wait_for(anext(events), 10)
                answer, codes = str(info.value.errors), info.value.codes
            else:
                response = await mallory.raw(call.document)
                answer = response.text
                codes = [e["extensions"]["code"] for e in response.json().get("errors", [])]
            # Echoing an id the caller sent tells them nothing; anything else would.
            leaked = [s for s in secrets if s in answer and s not in call.document]
            assert not leaked, f"{call.name} leaked {leaked}: {answer}"
            if names_alien and PERMISSIONS[call.name] != PUBLIC:
                assert codes == ["NOT_FOUND"], f"{call.name}: {codes}"
    finally:
        await alice.close()
        await mallory.close()


async def _join(owner: GraphQLClient, stack: Stack, role: str) -> GraphQLClient:
    member = await GraphQLClient.signed_up(stack.url)
    invited = (await owner.execute(INVITE, {"e": member.email, "r": role}))["inviteMember"]
    member.use(
        (await member.execute(ACCEPT, {"t": invited["invitationToken"]}))["acceptInvitation"]
    )
    assert member.role == role
    return member


async def test_roles_bound_what_members_may_do_and_changes_apply_at_once(stack: Stack) -> None:
    owner = await GraphQLClient.signed_up(stack.url)
    admin = await _join(owner, stack, "ADMIN")
    editor = await _join(owner, stack, "EDITOR")
    viewer = await _join(owner, stack, "VIEWER")
    try:
        assert await codes_of(viewer, CREATE) == ["FORBIDDEN"]
        await viewer.execute("{ workflows { nodes { id } } }")
        wid = (await editor.execute(CREATE))["createWorkflow"]["workflowId"]
        assert await codes_of(editor, INVITE, {"e": "x@example.com", "r": "VIEWER"}) == [
            "FORBIDDEN"
        ]
        # Privilege escalation: an editor cannot raise itself; an admin cannot make owners
        # or touch one.
        assert await codes_of(editor, CHANGE_ROLE, {"m": editor.actor, "r": "ADMIN"}) == [
            "FORBIDDEN"
        ]
        assert await codes_of(admin, CHANGE_ROLE, {"m": admin.actor, "r": "OWNER"}) == ["FORBIDDEN"]
        assert await codes_of(admin, CHANGE_ROLE, {"m": owner.actor, "r": "VIEWER"}) == [
            "FORBIDDEN"
        ]
        assert await codes_of(admin, INVITE, {"e": "boss@example.com", "r": "OWNER"}) == [
            "FORBIDDEN"
        ]
        # The last owner stays.
        assert await codes_of(owner, REMOVE, {"m": owner.actor}) == ["FORBIDDEN"]
        assert await codes_of(owner, CHANGE_ROLE, {"m": owner.actor, "r": "ADMIN"}) == ["FORBIDDEN"]
        # A demotion takes effect on the next call, not when the token expires.
        await admin.execute(CHANGE_ROLE, {"m": editor.actor, "r": "VIEWER"})
        assert await codes_of(editor, CREATE) == ["UNAUTHENTICATED"]
        editor.use((await editor.execute(REFRESH, {"t": editor.refresh_token}))["refreshToken"])
        assert editor.role == "VIEWER"
        rename = (
            'mutation($w: ID!) { renameWorkflow(input: {workflowId: $w, name: "n"}) { version } }'
        )
        assert await codes_of(editor, rename, {"w": wid}) == ["FORBIDDEN"]
        # Removal: the member's token stops at once and cannot be refreshed back in.
        await admin.execute(REMOVE, {"m": viewer.actor})
        assert await codes_of(viewer, "{ workflows { nodes { id } } }") == ["UNAUTHENTICATED"]
        assert await codes_of(viewer, REFRESH, {"t": viewer.refresh_token}) == ["UNAUTHENTICATED"]

        expected = {(owner.actor, "OWNER"), (admin.actor, "ADMIN"), (editor.actor, "VIEWER")}

        async def members() -> set[tuple[str, str]] | None:
            rows = (await owner.execute(MEMBERS))["members"]
            listed = {(m["userId"], m["role"]) for m in rows}
            return listed if listed == expected else None  # the read model catches up

        await eventually(members, 30, "members read model")
    finally:
        for c in (owner, admin, editor, viewer):
            await c.close()


async def test_an_invitation_needs_its_token_and_workspaces_lists_both(stack: Stack) -> None:
    owner = await GraphQLClient.signed_up(stack.url)
    newcomer = GraphQLClient(stack.url)
    squatter = GraphQLClient(stack.url)
    try:
        email = f"new-{owner.actor[:8]}@example.com"
        invited = (await owner.execute(INVITE, {"e": email, "r": "EDITOR"}))["inviteMember"]
        await squatter.sign_up()
        assert await codes_of(squatter, ACCEPT, {"t": invited["invitationToken"]}) == ["NOT_FOUND"]
        await newcomer.sign_up(email=email, workspace_name="Mine")
        assert await codes_of(newcomer, SWITCH, {"w": owner.workspace}) == ["NOT_FOUND"]
        home = newcomer.workspace
        newcomer.use(
            (await newcomer.execute(ACCEPT, {"t": invited["invitationToken"]}))["acceptInvitation"]
        )
        assert (newcomer.workspace, newcomer.role) == (owner.workspace, "EDITOR")

        async def both() -> list[dict[str, Any]] | None:
            spaces = (await newcomer.execute("{ workspaces { id name role } }"))["workspaces"]
            return spaces if len(spaces) == 2 else None

        spaces = await eventually(both, 30, "both workspaces listed")
        assert {(s["id"], s["role"]) for s in spaces} == {
            (owner.workspace, "EDITOR"),
            (home, "OWNER"),
        }
    finally:
        for c in (owner, newcomer, squatter):
            await c.close()


async def test_refresh_rotates_and_a_replayed_refresh_token_kills_the_session(
    client: GraphQLClient,
) -> None:
    stolen = client.refresh_token
    client.use((await client.execute(REFRESH, {"t": stolen}))["refreshToken"])
    assert client.refresh_token != stolen
    await client.execute("{ workflows { nodes { id } } }")
    thief = GraphQLClient(client.base_url)
    try:
        assert await codes_of(thief, REFRESH, {"t": stolen}) == ["UNAUTHENTICATED"]
    finally:
        await thief.close()
    # The whole family is revoked: the legitimate user's tokens stop too.
    assert await codes_of(client, "{ workflows { nodes { id } } }") == ["UNAUTHENTICATED"]
    assert await codes_of(client, REFRESH, {"t": client.refresh_token}) == ["UNAUTHENTICATED"]


async def test_logout_revokes_at_once_even_after_redis_lost_everything(stack: Stack) -> None:
    leaving = await GraphQLClient.signed_up(stack.url)
    staying = await GraphQLClient.signed_up(stack.url)
    try:
        logout = "mutation($t: String!) { logout(input: {refreshToken: $t}) }"
        assert (await leaving.execute(logout, {"t": leaving.refresh_token}))["logout"] is True
        assert await codes_of(leaving, ME) == ["UNAUTHENTICATED"]
        assert stack.settings.redis_url
        with redis.Redis.from_url(stack.settings.redis_url) as r:
            for key in r.scan_iter("autoops:auth:*"):
                r.delete(key)
        # The api keeps the marks it knows; any other is read only after Redis was rebuilt
        # from the event store (tests/integration/web/test_revocations.py).
        assert await codes_of(leaving, ME) == ["UNAUTHENTICATED"]
        await staying.execute("{ workflows { nodes { id } } }")
        # A Redis restarted from an old snapshot: the "built" marker survived (from another
        # server run) but the newest revocation did not.
        assert (await staying.execute(logout, {"t": staying.refresh_token}))["logout"] is True
        with redis.Redis.from_url(stack.settings.redis_url) as r:
            for key in r.scan_iter("autoops:auth:session:*"):
                r.delete(key)
            r.set("autoops:auth:built", "run-id-of-a-server-before-the-restart")
        assert await codes_of(staying, ME) == ["UNAUTHENTICATED"]
    finally:
        await leaving.close()
        await staying.close()


async def test_repeated_failed_logins_are_throttled_with_a_retry_time(stack: Stack) -> None:
    owner = await GraphQLClient.signed_up(stack.url)
    guesser = GraphQLClient(stack.url)
    try:
        for _ in range(stack.settings.login_max_failures_per_account):
            with pytest.raises(GraphQLError) as wrong:
                await guesser.log_in(owner.email, "not-the-password-1")
            assert wrong.value.codes == ["UNAUTHENTICATED"]
        with pytest.raises(GraphQLError) as limited:
            await guesser.log_in(owner.email, PASSWORD)  # even the right one, for now
        assert limited.value.codes == ["RATE_LIMITED"]
        assert 0 < limited.value.errors[0]["extensions"]["retryAfter"] <= 900
    finally:
        await owner.close()
        await guesser.close()


async def test_two_factor_sign_in_over_graphql(client: GraphQLClient) -> None:
    enable = "mutation($p: String!) { enableTotp(input: {password: $p}) { provisioningUri } }"
    assert await codes_of(client, enable, {"p": "not my password"}) == ["UNAUTHENTICATED"]
    setup = await client.execute(enable, {"p": PASSWORD})
    totp = pyotp.parse_uri(setup["enableTotp"]["provisioningUri"])
    assert setup["enableTotp"]["provisioningUri"].startswith("otpauth://totp/AutoOps:")
    confirm = "mutation($c: String!) { confirmTotp(input: {code: $c}) }"
    assert await codes_of(client, confirm, {"c": "000000"}) == ["VALIDATION"]
    await client.execute(confirm, {"c": totp.now()})  # type: ignore[attr-defined]
    fresh = GraphQLClient(client.base_url)
    try:
        with pytest.raises(GraphQLError) as asked:
            await fresh.log_in(client.email)
        assert asked.value.codes == ["UNAUTHENTICATED"]
        assert asked.value.errors[0]["extensions"]["totpRequired"] is True
        await fresh.log_in(client.email, totp=totp.now())  # type: ignore[attr-defined]
        assert fresh.actor == client.actor
    finally:
        await fresh.close()


async def test_changing_the_password_ends_other_sessions(stack: Stack) -> None:
    first = await GraphQLClient.signed_up(stack.url)
    second = GraphQLClient(stack.url)
    try:
        await second.log_in(first.email)
        change = """mutation($c: String!, $n: String!) {
          changePassword(input: {currentPassword: $c, newPassword: $n})
          { accessToken refreshToken expiresIn user { id email } workspace { id name role } } }"""
        assert await codes_of(first, change, {"c": PASSWORD, "n": "password123"}) == ["VALIDATION"]
        first.use(
            (await first.execute(change, {"c": PASSWORD, "n": "amber-Meadow-quartz-77"}))[
                "changePassword"
            ]
        )
        await first.execute("{ workflows { nodes { id } } }")
        assert await codes_of(second, "{ workflows { nodes { id } } }") == ["UNAUTHENTICATED"]
        assert await codes_of(second, REFRESH, {"t": second.refresh_token}) == ["UNAUTHENTICATED"]
    finally:
        await first.close()
        await second.close()


def _user_create(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    assert stack.settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "user", "create", *args, "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env={"AUTOOPS_DATABASE_URL": stack.settings.database_url, "AUTOOPS_BCRYPT_COST": "4"},
        check=False,
        timeout=60,
    )


def test_operators_create_accounts_from_the_command_line(stack: Stack) -> None:
    email = "ops@example.com"
    created = _user_create(stack, "--email", email, "--role", "owner", "--workspace", "Operations")
    assert created.returncode == 0, created.stderr
    assert "owner of workspace" in created.stdout
    signed_in = httpx.post(
        f"{stack.url}/graphql",
        json={
            "query": "mutation($i: LoginInput!) { login(input: $i) { workspace { name role } } }",
            "variables": {"i": {"email": email, "password": PASSWORD}},
        },
        timeout=30,
    )
    assert signed_in.json()["data"]["login"]["workspace"] == {"name": "Operations", "role": "OWNER"}
    again = _user_create(stack, "--email", email, "--role", "viewer", "--workspace", "New place")
    assert again.returncode == 2 and "owner" in again.stderr


async def test_a_live_subscription_ends_when_its_session_is_revoked(stack: Stack) -> None:
    watcher = await GraphQLClient.signed_up(stack.url)
    try:
        wid = (await watcher.execute(CREATE))["createWorkflow"]["workflowId"]
        events = "subscription($w: ID!) { workflowEvents(workflowId: $w) { version } }"
        with pytest.raises(GraphQLError) as ended:
            async with watcher.subscribe(events, {"w": wid}) as stream:
                assert (await asyncio.wait_for(anext(stream), 10))["workflowEvents"]["version"] == 1
                logout = "mutation($t: String!) { logout(input: {refreshToken: $t}) }"
                await watcher.execute(logout, {"t": watcher.refresh_token})
                await asyncio.wait_for(anext(stream), 30)
        assert ended.value.codes == ["UNAUTHENTICATED"]
    finally:
        await watcher.close()


async def test_sign_ins_and_role_changes_land_in_the_audit_log(stack: Stack) -> None:
    owner = await GraphQLClient.signed_up(stack.url)
    editor = await _join(owner, stack, "EDITOR")
    stranger = GraphQLClient(stack.url)
    try:
        with pytest.raises(GraphQLError):
            await stranger.log_in(owner.email, "not-the-password-2")
        await owner.execute(CHANGE_ROLE, {"m": editor.actor, "r": "VIEWER"})
        query = "{ auditLog(first: 100) { nodes { type actorId data } } }"

        async def logged() -> list[dict[str, Any]] | None:
            nodes = (await owner.execute(query))["auditLog"]["nodes"]
            kinds = {n["type"] for n in nodes}
            wanted = {"LoginSucceeded", "LoginFailed", "MemberAdded", "MemberRoleChanged"}
            return nodes if wanted <= kinds else None

        nodes = await eventually(logged, 30, "audit entries")
        changed = next(n for n in nodes if n["type"] == "MemberRoleChanged")
        assert changed["actorId"] == owner.actor
        assert changed["data"]["role"] == "viewer" and changed["data"]["previous"] == "editor"
        assert "password_hash" not in json.dumps(nodes)
        editor.use((await editor.execute(REFRESH, {"t": editor.refresh_token}))["refreshToken"])
        assert await codes_of(editor, query) == ["FORBIDDEN"]
    finally:
        for c in (owner, editor, stranger):
            await c.close()


async def test_an_open_websocket_loses_access_when_its_caller_does(stack: Stack) -> None:
    """Queries and mutations travel over the socket too: each is checked against the token's
    current standing, not the one it had when the socket opened."""
    owner = await GraphQLClient.signed_up(stack.url)
    editor = await _join(owner, stack, "EDITOR")
    url = stack.url.replace("http", "ws", 1) + "/graphql"
    try:
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            init = {"Authorization": f"Bearer {editor.access_token}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"

            async def run(op_id: str, document: str) -> dict[str, Any]:
                message = {"id": op_id, "type": "subscribe", "payload": {"query": document}}
                await ws.send(json.dumps(message))
                while True:
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if answer.get("id") == op_id and answer["type"] in ("next", "error"):
                        return dict(answer["payload"])

            assert "errors" not in await run("1", CREATE)
            await owner.execute(REMOVE, {"m": editor.actor})
            refused = await run("2", CREATE)
            assert [e["extensions"]["code"] for e in refused["errors"]] == ["UNAUTHENTICATED"]
            members = await run("3", MEMBERS)
            assert [e["extensions"]["code"] for e in members["errors"]] == ["UNAUTHENTICATED"]
    finally:
        await owner.close()
        await editor.close()


async def test_a_stolen_token_cannot_brute_force_the_password(client: GraphQLClient) -> None:
    change = """mutation($c: String!) { changePassword(input:
      {currentPassword: $c, newPassword: "amber-Meadow-quartz-77"}) { accessToken } }"""
    limit = 5  # AUTOOPS_LOGIN_MAX_FAILURES_PER_ACCOUNT's default, per account
    for i in range(limit):
        assert await codes_of(client, change, {"c": f"guess-{i}"}) == ["UNAUTHENTICATED"]
    assert await codes_of(client, change, {"c": PASSWORD}) == ["RATE_LIMITED"]


async def test_a_logout_on_one_api_process_is_refused_by_another(stack: Stack) -> None:
    """Each api process keeps the revocation marks it read; a change made through one reaches
    the others over Redis pub/sub, not when they next happen to read Redis."""
    second = dataclasses.replace(stack.settings, api_port=embedded.free_port())
    with running_stack(second, ("api",)) as other:
        other.wait_ready()
        here = await GraphQLClient.signed_up(stack.url)
        there = GraphQLClient(other.url)
        there.access_token = here.access_token  # the same caller, on the other process
        try:
            for _ in range(3):  # read once there, then answered from what it keeps
                assert (await there.execute(NODE_TYPES))["nodeTypes"]
            logout = "mutation($t: String!) { logout(input: {refreshToken: $t}) }"
            assert (await here.execute(logout, {"t": here.refresh_token}))["logout"] is True

            async def refused() -> bool:
                try:
                    await there.execute(NODE_TYPES)
                except GraphQLError as exc:
                    return [str(c) for c in exc.codes] == ["UNAUTHENTICATED"]
                return False

            # Under the 3 s after which a process that hears nothing stops trusting its marks and
            # reads Redis again (web/auth/revocation.py LIVE_WITHIN_S): pub/sub did this.
            await eventually(refused, 2.5, "the other api process refused the ended session")
        finally:
            await here.close()
            await there.close()
