"""`http.request`: call an HTTP API and return its status, headers and (parsed) body."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import httpx

from runners.nodes.context import StepContext
from runners.nodes.errors import StepError
from runners.nodes.watch import SocketAborter, Watch, watch

#: Characters of the body an HttpStatusError message quotes.
_EXCERPT = 200
#: Failures of the exchange itself that a new attempt may well not meet.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def http_request(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    method = str(config.get("method") or "GET").upper()
    url = config.get("url")
    if not isinstance(url, str) or not _is_web_url(url):
        raise StepError("ConfigError", f"url must be an http:// or https:// URL, got {url!r}")
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    if config.get("auth"):
        auth = _auth_headers(ctx, config["auth"].get("credential"))
        replaced = {name.lower() for name in auth}
        headers = {k: v for k, v in headers.items() if k.lower() not in replaced} | auth
    seconds = ctx.time_left(config)
    aborter = SocketAborter()
    client = httpx.Client(
        timeout=httpx.Timeout(seconds, connect=min(seconds, 10.0)),
        follow_redirects=True,
        event_hooks={"request": [aborter.on_request]},
    )
    with client, watch(ctx.cancelled, aborter.abort, seconds=seconds) as watching:
        try:
            with client.stream(
                method,
                url,
                headers=headers,
                params={str(k): str(v) for k, v in (config.get("query") or {}).items()},
                **_body_argument(config.get("body")),
            ) as response:
                data = _read_capped(response, ctx)
        except httpx.InvalidURL as exc:
            raise StepError("ConfigError", f"url {url!r} is invalid: {exc}") from None
        except httpx.HTTPError as exc:
            raise _transport_error(method, url, exc, watching, ctx) from None
    status = response.status_code
    if status >= 400:
        excerpt = data[: _EXCERPT * 4].decode("utf-8", "replace")[:_EXCERPT].strip()
        raise StepError(
            "HttpStatusError",
            f"{method} {url} answered {status}" + (f": {excerpt}" if excerpt else ""),
            retryable=status >= 500 or status == 429,
        )
    body = "" if method == "HEAD" else _decoded(data, response, ctx)
    return {
        "status": status,
        "headers": {k.lower(): v for k, v in response.headers.items()},
        "body": body,
    }


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # an unclosed IPv6 bracket, a port that is no number
        return False


def _auth_headers(ctx: StepContext, name: Any) -> dict[str, str]:
    secret = ctx.credential(name, "http_bearer", "http_basic", "http_header")
    if secret["kind"] == "http_bearer":
        return {"Authorization": f"Bearer {secret['token']}"}
    if secret["kind"] == "http_basic":
        pair = f"{secret['username']}:{secret['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {secret["name"]: secret["value"]}


def _body_argument(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, str):
        return {"content": body.encode()}
    return {"json": body}


def _read_capped(response: httpx.Response, ctx: StepContext) -> bytes:
    limit = ctx.settings.http_max_response_bytes
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if ctx.cancelled.is_set():
            raise StepError("Cancelled", "the step was cancelled")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> StepError:
    return StepError("ResponseTooLarge", f"the response body exceeds {limit} bytes")


def _decoded(data: bytes, response: httpx.Response, ctx: StepContext) -> Any:
    """JSON when the body is JSON, else text; a body that is not text goes to the artifact
    store and the output holds its reference."""
    if not data:
        return ""
    try:
        text = data.decode(response.charset_encoding or "utf-8")
    except (UnicodeDecodeError, LookupError):
        media_type = response.headers.get("content-type", "application/octet-stream")
        return ctx.artifacts.put_bytes(ctx.workspace, data, media_type)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON data")


def _transport_error(
    method: str, url: str, exc: httpx.HTTPError, watching: Watch, ctx: StepContext
) -> StepError:
    if watching.reason == "cancelled" or ctx.cancelled.is_set():
        return StepError("Cancelled", "the step was cancelled")
    if watching.reason == "timeout" or isinstance(exc, httpx.TimeoutException):
        return StepError("HttpError", f"{method} {url} timed out", retryable=True)
    detail = str(exc) or type(exc).__name__
    return StepError(
        "HttpError", f"{method} {url} failed: {detail}", retryable=isinstance(exc, _TRANSIENT)
    )
