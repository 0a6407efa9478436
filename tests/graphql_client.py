"""A small GraphQL client for tests: HTTP via httpx, subscriptions via graphql-transport-ws."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import websockets

from tests.waiting import eventually


class GraphQLError(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors
        self.codes = [e.get("extensions", {}).get("code") for e in errors]


PASSWORD = "violet-Harbour-lantern-42"
AUTH_FIELDS = "accessToken refreshToken expiresIn user { id email } workspace { id name role }"
REGISTER = f"mutation($i: RegisterInput!) {{ register(input: $i) {{ {AUTH_FIELDS} }} }}"
LOGIN = f"mutation($i: LoginInput!) {{ login(input: $i) {{ {AUTH_FIELDS} }} }}"


class GraphQLClient:
    """Anonymous until `sign_up`/`log_in`; then every call carries the access token."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.actor = ""
        self.workspace = ""
        self.role = ""
        self.email = ""
        self._http = httpx.AsyncClient(base_url=base_url, timeout=30)

    @classmethod
    async def signed_up(cls, base_url: str, **register: str) -> GraphQLClient:
        client = cls(base_url)
        await client.sign_up(**register)
        return client

    async def sign_up(
        self, email: str | None = None, workspace_name: str = "Tests", password: str = PASSWORD
    ) -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        data = await self.execute(
            REGISTER,
            {
                "i": {
                    "email": email,
                    "password": password,
                    "displayName": email.split("@")[0],
                    "workspaceName": workspace_name,
                }
            },
        )
        return self.use(data["register"])

    async def log_in(self, email: str, password: str = PASSWORD, totp: str | None = None) -> None:
        data = await self.execute(
            LOGIN, {"i": {"email": email, "password": password, "totpCode": totp}}
        )
        self.use(data["login"])

    def use(self, auth: dict[str, Any]) -> dict[str, Any]:
        """Adopt the tokens of an AuthPayload."""
        self.access_token, self.refresh_token = auth["accessToken"], auth["refreshToken"]
        self.actor, self.email = auth["user"]["id"], auth["user"]["email"]
        self.workspace, self.role = auth["workspace"]["id"], auth["workspace"]["role"]
        return auth

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"} if self.access_token else {}

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return await self._http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=self.headers
        )

    async def post_raw(self, body: bytes) -> httpx.Response:
        """POST a request body exactly as given (e.g. JSON with escapes httpx would not make)."""
        headers = {**self.headers, "content-type": "application/json"}
        return await self._http.post("/graphql", content=body, headers=headers)

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.raw(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return dict(body["data"])

    async def settled(
        self,
        query: str,
        variables: dict[str, Any],
        ready: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """`query`'s data once `ready(data)` holds, asking again while the read models catch
        up (UNAVAILABLE and NOT_FOUND count as not yet: the projector has not reached the
        aggregate, or, for a field that reads a list, an entry of it)."""

        async def ask() -> dict[str, Any] | None:
            try:
                data = await self.execute(query, variables)
            except GraphQLError as missing:
                if missing.codes in (["UNAVAILABLE"], ["NOT_FOUND"]):
                    return None
                raise
            return data if ready(data) else None

        return await eventually(ask, timeout, what)

    async def caught_up(
        self, query: str, variables: dict[str, Any], version: int, timeout: float = 30
    ) -> dict[str, Any]:
        """A read of one aggregate (its query selects `version`, e.g. `workflow(id,
        atLeastVersion: $v)`) once it shows `version`. `atLeastVersion` alone waits at most
        2 s; a projector on a loaded machine can be further behind than that."""

        def shows(data: dict[str, Any]) -> bool:
            (value,) = data.values()
            return bool(value) and int(value["version"]) >= version

        return await self.settled(query, variables, shows, f"version {version}", timeout)

    @asynccontextmanager
    async def subscribe(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        url = self.base_url.replace("http", "ws", 1) + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"Authorization": self.headers.get("authorization")},
                    }
                )
            )
            ack = json.loads(await ws.recv())
            assert ack["type"] == "connection_ack", ack
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": query, "variables": variables or {}},
                    }
                )
            )

            async def messages() -> AsyncIterator[dict[str, Any]]:
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "next":
                        if message["payload"].get("errors"):
                            raise GraphQLError(message["payload"]["errors"])
                        yield message["payload"]["data"]
                    elif message["type"] == "error":
                        raise GraphQLError(message["payload"])
                    elif message["type"] == "complete":
                        return
                    elif message["type"] == "ping":
                        await ws.send(json.dumps({"type": "pong"}))

            yield messages()

    async def close(self) -> None:
        await self._http.aclose()
