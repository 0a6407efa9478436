"""Webhooks: `POST /hooks/{workspace}/{path}` starts the published workflow whose
`trigger.webhook` listens on that path, and answers 202 with the execution id.

The request becomes the execution's inputs: `{"body", "query", "headers"}` (a JSON body
parsed, anything else as text; credentials-like headers dropped). A trigger naming a
`credential` admits only callers that present it (an `http_header` credential: that header
with its value; `http_bearer`: `Authorization: Bearer <token>`), compared in constant time.
The secret lives encrypted in the credential, never in the workflow. An `Idempotency-Key` header
makes retries of the same delivery start one execution: the answer names the same id.
A workspace may make `AUTOOPS_WEBHOOK_RATE_PER_S` deliveries per second (shared by every api
process); beyond, 429 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from functools import cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from litestar import Request, Response, post
from litestar.datastructures import State

from command_side.errors import CommandError, Conflict
from command_side.execution.aggregate import StepProblem
from command_side.execution.service import ExecutionService
from infra import jsontext
from infra.secrets import CredentialError, Vault
from infra.settings import Settings
from query_side import views
from web.auth import RateLimited
from web.rest import bounded_body
from web.rest import problem as _problem
from web.services import Services, scoped

DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "content-length"})
#: Longest a webhook that found no workflow waits for the api's event tail to read the store's
#: latest events (a publish the read model has not folded yet).
HEAD_WAIT_S = 1.0
PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


# No framework cap: `bounded_body` applies AUTOOPS_WEBHOOK_MAX_BODY_BYTES, whatever its size,
# and answers in the webhooks' own error shape.
@post("/hooks/{workspace:str}/{path:str}", status_code=202, request_max_body_size=None)
async def webhook(
    workspace: str, path: str, request: Request[Any, Any, Any], state: State
) -> Response[dict[str, Any]]:
    svc: Services = state.services
    try:
        workspace_id = str(UUID(workspace))
    except ValueError:
        return _problem(404, "NOT_FOUND", "no webhook here")
    if not path or len(path) > 64 or not set(path) <= PATH_CHARS:
        return _problem(404, "NOT_FOUND", "no webhook here")
    try:
        await svc.webhook_rate.admit(f"webhook:{workspace_id}")
    except RateLimited as limited:
        answer = _problem(429, "RATE_LIMITED", str(limited))
        answer.headers["Retry-After"] = str(limited.retry_after_s)
        return answer
    limit = svc.settings.webhook_max_body_bytes
    raw = await bounded_body(request, limit)
    if raw is None:
        return _problem(413, "TOO_LARGE", f"the body is larger than {limit} bytes")
    async with scoped(svc.pool, workspace_id) as conn:
        candidates = await views.webhook_workflows(conn, workspace_id, path)
    service = ExecutionService(svc.execution_store, svc.store)
    found = await asyncio.to_thread(_find, service, workspace_id, candidates, path)
    if not found:
        # Published a moment ago: the store has the version, the read model may not yet.
        await svc.tail.reach_head(HEAD_WAIT_S)
        recent = svc.tail.recently_published(workspace_id)
        if recent:
            async with scoped(svc.pool, workspace_id) as conn:
                again = await views.webhook_workflows_or_unfolded(conn, workspace_id, path, recent)
            found = await asyncio.to_thread(_find, service, workspace_id, again, path)
    if not found:
        return _problem(404, "NOT_FOUND", "no webhook here")
    if len(found) > 1:
        return _problem(409, "AMBIGUOUS", f"{len(found)} published workflows listen on {path}")
    workflow_id, node_id, credential = found[0]
    hidden = DROPPED_HEADERS
    if credential is not None:
        refusal, header = await asyncio.to_thread(
            _refusal, service, _vault(svc.settings), workspace_id, credential, request.headers
        )
        if refusal is not None:
            return _problem(401, "UNAUTHENTICATED", refusal)
        hidden = hidden | {header}  # the secret never becomes part of the inputs
    inputs = {
        "body": _body(raw, request.headers.get("content-type", "")),
        "query": dict(request.query_params),
        "headers": {k: v for k, v in request.headers.items() if k.lower() not in hidden},
    }
    key = request.headers.get("idempotency-key")
    execution_id = (
        uuid5(NAMESPACE_URL, f"autoops:webhook:{workspace_id}:{path}:{key}") if key else None
    )
    try:
        started = await asyncio.wrap_future(
            svc.starter.submit(  # group-committed with every other start
                workspace_id=workspace_id,
                actor_id=f"webhook:{path}",
                workflow_id=workflow_id,
                inputs=inputs,
                trigger={"kind": "webhook", "path": path, "node_id": node_id},
                start_node=node_id,
                execution_id=execution_id,
            )
        )
    except Conflict:
        assert execution_id is not None
        return Response({"executionId": str(execution_id), "duplicate": True}, status_code=200)
    except CommandError as exc:
        return _problem(422, exc.code, exc.message)
    return Response({"executionId": str(started)}, status_code=202)


def _find(
    service: ExecutionService, workspace_id: str, candidates: list[UUID], path: str
) -> list[tuple[str, str, Any]]:
    """(workflow, node, secret) of each published version listening on `path`."""
    found = []
    for workflow_id in candidates:
        try:
            pinned = service.pinned(workspace_id, str(workflow_id), None)
        except CommandError:
            continue  # not published (yet)
        for node_id, node in sorted(pinned.nodes.items()):
            config = node.get("config") or {}
            if node["type"] == "trigger.webhook" and config.get("path") == path:
                found.append((str(workflow_id), node_id, config.get("credential")))
    return found


@cache
def _vault(settings: Settings) -> Vault:
    return Vault.from_settings(settings)


def _refusal(
    service: ExecutionService,
    vault: Vault,
    workspace_id: str,
    name: str,
    headers: Mapping[str, str],
) -> tuple[str | None, str]:
    """Why the caller may not start this webhook (None: it may), and the header that
    carries the secret."""
    try:
        (stored,) = service.credentials(workspace_id, [name]).values()
        secret = vault.decrypt(stored["ciphertext"])
    except (StepProblem, CredentialError):
        return f"the webhook's credential {name!r} is missing", ""
    if secret.get("kind") == "http_bearer":
        header, expected = "authorization", f"Bearer {secret.get('token', '')}"
    elif secret.get("kind") == "http_header":
        header, expected = str(secret.get("name", "")).lower(), str(secret.get("value", ""))
    else:
        return "the webhook's credential is neither http_header nor http_bearer", ""
    given = headers.get(header, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return f"the {header} header is missing or wrong", header
    return None, header


def _body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type or text[:1] in ("{", "["):
        try:
            return jsontext.loads(text, allow_nan=False)
        except ValueError:  # not JSON after all (or nested too deep): kept as text
            pass
    return text
