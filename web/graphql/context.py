"""Per-request GraphQL context: the services and who is asking, in which workspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.datastructures import State
from strawberry.types import Info

from web.auth import Principal
from web.auth.permissions import unauthenticated
from web.services import Services


@dataclass(frozen=True)
class Caller:
    actor_id: str
    workspace_id: str
    role: str
    session_id: str


async def context_getter(state: State) -> dict[str, Any]:
    return {"services": state.services}


def services(info: Info[Any, Any]) -> Services:
    return info.context["services"]  # type: ignore[no-any-return]


def caller(info: Info[Any, Any]) -> Caller:
    """Who is calling: the principal the field's permission check authenticated."""
    principal: Principal | None = info.context.get("principal")
    if principal is None:
        raise unauthenticated("sign in to use this api (Authorization: Bearer <token>)")
    return Caller(
        actor_id=principal.user_id,
        workspace_id=principal.workspace_id,
        role=principal.role,
        session_id=principal.session_id,
    )


def client_address(info: Info[Any, Any]) -> str:
    request = info.context.get("request") or info.context.get("socket")
    client = getattr(request, "client", None)
    return str(client.host) if client else ""
