"""Artifacts over REST, for signed-in members of the artifact's workspace.

`GET /artifacts/{sha256}`: a large step output, a binary response body, a download or a
screenshot that an event keeps as a content-addressed reference.
`POST /artifacts` (editors): store the request body (its `Content-Type` as the media type), for
steps to use: files a browser step uploads, template images of desktop steps. Answers 201 with
the reference (`{"$artifact": {sha256, size, media_type}}`) and its download URL.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from graphql import GraphQLError
from litestar import Request, Response, get, post
from litestar.datastructures import State

from command_side.identity import rank
from infra.artifacts import REF_KEY, ArtifactError, ArtifactStore, from_settings
from infra.settings import Settings
from web.auth import authenticate
from web.auth.tokens import Principal
from web.rest import bounded_body
from web.rest import problem as _problem

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@cache
def artifact_store(settings: Settings) -> ArtifactStore:
    """The store of these settings (one per process)."""
    return from_settings(settings)


async def _caller(request: Request[Any, Any, Any], svc: Any) -> Principal | Response[Any]:
    """The signed-in caller, or the 401 to answer."""
    try:
        principal = await authenticate({"request": request, "services": svc})
    except GraphQLError as exc:
        return _problem(401, "UNAUTHENTICATED", exc.message)
    if principal is None:
        return _problem(401, "UNAUTHENTICATED", "Authorization: Bearer <token>")
    return principal


@get("/artifacts/{sha256:str}")
async def artifact(sha256: str, request: Request[Any, Any, Any], state: State) -> Response[Any]:
    svc = state.services
    principal = await _caller(request, svc)
    if isinstance(principal, Response):
        return principal
    store = artifact_store(svc.settings)
    try:
        data = await asyncio.to_thread(store.get_bytes, principal.workspace_id, sha256)
        media_type = await asyncio.to_thread(store.media_type, principal.workspace_id, sha256)
    except ArtifactError:
        # Unknown, malformed, or another workspace's: indistinguishable on purpose.
        return _problem(404, "NOT_FOUND", "no such artifact")
    return Response(
        data,
        media_type=media_type,
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{sha256[:16]}"',
        },
    )


@post("/artifacts", status_code=201, request_max_body_size=MAX_UPLOAD_BYTES + 1)
async def upload_artifact(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    svc = state.services
    principal = await _caller(request, svc)
    if isinstance(principal, Response):
        return principal
    if rank(principal.role) < rank("editor"):
        return _problem(403, "FORBIDDEN", "uploading artifacts needs the editor role")
    data = await bounded_body(request, MAX_UPLOAD_BYTES)
    if data is None:
        return _problem(413, "TOO_LARGE", f"an artifact is at most {MAX_UPLOAD_BYTES} bytes")
    if not data:
        return _problem(400, "VALIDATION", "the body is empty")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not media_type or len(media_type) > 100 or "/" not in media_type:
        media_type = "application/octet-stream"
    store = artifact_store(svc.settings)
    ref = await asyncio.to_thread(store.put_bytes, principal.workspace_id, data, media_type)
    return Response(ref | {"url": f"/artifacts/{ref[REF_KEY]['sha256']}"}, status_code=201)
