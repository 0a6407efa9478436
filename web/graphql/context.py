"""Per-request GraphQL context: the services and who is asking, in which workspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State
from strawberry.types import Info

from web.graphql.errors import graphql_error
from web.services import Services

DEV_WORKSPACE = "default"
DEV_ACTOR = "developer"


@dataclass(frozen=True)
class Caller:
    actor_id: str
    workspace_id: str


async def context_getter(state: State) -> dict[str, Any]:
    return {"services": state.services}


def services(info: Info[Any, Any]) -> Services:
    return info.context["services"]  # type: ignore[no-any-return]


def caller(info: Info[Any, Any]) -> Caller:
    """Who is calling. Until identity lands, development trusts the X-AutoOps-* headers
    (or websocket connection params) and production refuses anonymous calls."""
    ctx = info.context
    params = ctx.get("connection_params") or {}
    request = ctx.get("request")
    headers = request.headers if request is not None else {}
    workspace = headers.get("x-autoops-workspace") or params.get("workspaceId")
    actor = headers.get("x-autoops-actor") or params.get("actorId")
    if not (workspace and actor):
        if services(info).settings.production:
            raise graphql_error("UNAUTHENTICATED", "sign in to use this api")
        workspace, actor = workspace or DEV_WORKSPACE, actor or DEV_ACTOR
    return Caller(actor_id=str(actor), workspace_id=str(workspace))
