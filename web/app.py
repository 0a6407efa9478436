"""The api: one Litestar app serving GraphQL (HTTP + graphql-transport-ws), health and metrics."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from graphql import GraphQLError
from litestar import Litestar, MediaType, Response, get
from litestar.background_tasks import BackgroundTasks
from litestar.datastructures import State
from litestar.di import Provide
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from strawberry.exceptions import ConnectionRejectionError
from strawberry.litestar import make_graphql_controller
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET

from infra.settings import Settings
from web.artifacts import artifact, upload_artifact
from web.auth import authenticate
from web.graphql.context import context_getter
from web.graphql.fanout import FanoutTransportWSHandler
from web.graphql.schema import build_schema
from web.health import readiness
from web.security import cors_config, security_headers
from web.services import Services
from web.webhooks import webhook


@get("/health/live", media_type=MediaType.JSON, sync_to_thread=False)
def live() -> dict[str, str]:
    return {"status": "live"}


@get("/health/ready", media_type=MediaType.JSON)
async def ready(state: State) -> Response[dict[str, Any]]:
    report = await readiness(state.services)
    return Response(report, status_code=200 if report["status"] == "ready" else 503)


@get("/metrics", sync_to_thread=False)
def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


#: The collector's generation thresholds in the api (Python's default: 700, 10, 10).
GC_THRESHOLDS = (2_000, 20, 100)


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.services = await Services.start(settings)
        # Everything built so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall requests for tens of milliseconds.
        gc.freeze()
        # Hundreds of live subscriptions keep many objects alive: a full pass over them took
        # ~100 ms every few seconds under the collaboration load (bench/collab.py), so full
        # passes come once per 4 million allocations. Young passes stay small: each request
        # leaves ~70 objects in reference cycles (graphql-core, Litestar, uvicorn), and a
        # young pass every 20,000 allocations stopped the api for 12-17 ms to free them;
        # every 2,000 it takes 2-4 ms.
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            await asyncio.shield(app.state.services.close())

    graphql = make_graphql_controller(
        build_schema(settings),
        path="/graphql",
        graphql_ide="graphiql" if settings.graphiql else None,
        context_getter=context_getter,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        keep_alive=True,
        keep_alive_interval=15,
    )

    class GraphQLController(graphql):  # type: ignore[valid-type,misc]
        # Strawberry resolves this dependency with sync_to_thread=True: a thread-pool hop on
        # every request for building an empty Response.
        dependencies = {**graphql.dependencies, "response": Provide(_empty_response)}
        # Subscriptions of plain data share one rendering per event (web/graphql/fanout.py).
        graphql_transport_ws_handler_class = FanoutTransportWSHandler

        def decode_json(self, data: str | bytes) -> object:
            """A body nested past Python's recursion limit is malformed JSON (400), not a
            server error (500)."""
            try:
                return json.loads(data)
            except RecursionError:
                raise json.JSONDecodeError("nested too deeply", "", 0) from None

        async def on_ws_connect(self, context: dict[str, Any]) -> Any:
            """A websocket needs a valid access token in `connection_params.Authorization`
            (and, from a browser, an allowed origin) before it may subscribe."""
            socket = context.get("socket")
            origin = socket.headers.get("origin") if socket is not None else None
            if origin and not _origin_allowed(origin, socket, settings.allowed_origins):
                raise ConnectionRejectionError({"reason": "origin not allowed"})
            try:
                principal = await authenticate(context)
            except GraphQLError as exc:
                raise ConnectionRejectionError({"reason": exc.message}) from None
            if principal is None:
                raise ConnectionRejectionError(
                    {"reason": "connection_params.Authorization must carry 'Bearer <access token>'"}
                )
            return UNSET

    return Litestar(
        route_handlers=[
            GraphQLController,
            live,
            ready,
            metrics,
            webhook,
            artifact,
            upload_artifact,
        ],
        lifespan=[lifespan],
        before_send=[security_headers("/graphql" if settings.graphiql else None)],
        cors_config=cors_config(settings),
    )


async def _empty_response() -> Response[Any]:
    return Response({}, background=BackgroundTasks([]))


def _origin_allowed(origin: str, socket: Any, allowed: list[str]) -> bool:
    """Same origin always; others only when listed in AUTOOPS_CORS_ORIGINS."""
    host = socket.headers.get("host", "")
    return origin in allowed or "*" in allowed or origin.split("://", 1)[-1] == host
