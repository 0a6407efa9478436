"""A small GraphQL client for tests: HTTP via httpx, subscriptions via graphql-transport-ws."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import websockets


class GraphQLError(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors
        self.codes = [e.get("extensions", {}).get("code") for e in errors]


class GraphQLClient:
    def __init__(self, base_url: str, workspace: str | None = None, actor: str = "tester") -> None:
        self.base_url = base_url
        self.workspace = workspace or f"ws-{uuid.uuid4().hex[:8]}"
        self.actor = actor
        self._http = httpx.AsyncClient(base_url=base_url, timeout=30)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-autoops-workspace": self.workspace, "x-autoops-actor": self.actor}

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return await self._http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=self.headers
        )

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.raw(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return dict(body["data"])

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
                        "payload": {"workspaceId": self.workspace, "actorId": self.actor},
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
