"""What the REST edges (webhooks, artifacts) share: the error shape and a bounded body."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response


def problem(status: int, code: str, message: str) -> Response[Any]:
    """`{"error": {"code", "message"}}` with the status."""
    return Response({"error": {"code": code, "message": message}}, status_code=status)


async def bounded_body(request: Request[Any, Any, Any], limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` bytes (refused on its declared
    length before it is read, when it declares one)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    # Read as it comes: a body of undeclared length (chunked) is not taken whole first.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
