"""`GET /artifacts/{sha256}`: a large step output (or a binary response body) that the event
keeps as a content-addressed reference, for a signed-in member of its workspace."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from graphql import GraphQLError
from litestar import Request, Response, get
from litestar.datastructures import State

from infra.artifacts import ArtifactError, ArtifactStore, from_settings
from infra.settings import Settings
from web.auth import authenticate


@cache
def _store(settings: Settings) -> ArtifactStore:
    return from_settings(settings)


@get("/artifacts/{sha256:str}")
async def artifact(sha256: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    svc = state.services
    try:
        principal = await authenticate({"request": request, "services": svc})
    except GraphQLError as exc:
        return Response(
            {"error": {"code": "UNAUTHENTICATED", "message": exc.message}}, status_code=401
        )
    if principal is None:
        return Response(
            {"error": {"code": "UNAUTHENTICATED", "message": "Authorization: Bearer <token>"}},
            status_code=401,
        )
    store = _store(svc.settings)
    try:
        data = await asyncio.to_thread(store.get_bytes, principal.workspace_id, sha256)
        media_type = await asyncio.to_thread(store.media_type, principal.workspace_id, sha256)
    except ArtifactError:
        # Unknown, malformed, or another workspace's: indistinguishable on purpose.
        return Response(
            {"error": {"code": "NOT_FOUND", "message": "no such artifact"}}, status_code=404
        )
    return Response(
        data,
        media_type=media_type,
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{sha256[:16]}"',
        },
    )
