"""`run_step`: the executor of a task's node type, with the rules every step shares (not
after its deadline, not once cancelled, never a secret in its output or error)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from infra.secrets import redact, secret_strings
from runners.nodes.browser import EXECUTORS as BROWSER_EXECUTORS
from runners.nodes.context import StepContext
from runners.nodes.data import data_filter, data_transform
from runners.nodes.desktop import EXECUTORS as DESKTOP_EXECUTORS
from runners.nodes.errors import StepError
from runners.nodes.files import file_read, file_write
from runners.nodes.http_request import http_request
from runners.nodes.jsonable import redact_json
from runners.nodes.llm import ai_extract, ai_llm
from runners.nodes.sql_query import sql_query

Executor = Callable[[dict[str, Any], StepContext], Any]

EXECUTORS: dict[str, Executor] = {
    **BROWSER_EXECUTORS,
    **DESKTOP_EXECUTORS,
    "http.request": http_request,
    "sql.query": sql_query,
    "data.transform": data_transform,
    "data.filter": data_filter,
    "file.read": file_read,
    "file.write": file_write,
    "ai.llm": ai_llm,
    "ai.extract": ai_extract,
}

#: Steps with no effect beyond their output: running one twice is harmless, so a runner may
#: start them before its take is committed (every other step starts only after).
PURE = frozenset({"data.transform", "data.filter"})


def run_step(task: dict[str, Any], ctx: StepContext) -> Any:
    """The step's JSON output; StepError (secrets redacted) when it fails."""
    secrets = _secrets(ctx)
    node_type = task.get("node_type")
    executor = EXECUTORS.get(node_type) if isinstance(node_type, str) else None
    if executor is None:
        raise StepError("UnknownNodeType", f"runners cannot execute {node_type!r} steps")
    if ctx.cancelled.is_set():
        raise StepError("Cancelled", "the step was cancelled before it started")
    deadline = task.get("deadline")
    if deadline is not None and time.time() >= float(deadline):
        raise StepError("StepTimeout", "the step's deadline passed before it started", True)
    try:
        output = executor(task.get("config") or {}, ctx)
    except StepError as exc:
        details = redact_json(exc.details, secrets) if exc.details else None
        raise StepError(exc.type, redact(exc.message, secrets), exc.retryable, details) from None
    except Exception as exc:
        # A bug or an unforeseen failure: still reported, still without secrets; the
        # traceback is left behind because its frames may hold decrypted values.
        message = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise StepError("InternalError", message) from None
    return redact_json(output, secrets)


def _secrets(ctx: StepContext) -> list[str]:
    found = [s for secret in ctx.secrets.values() for s in secret_strings(secret)]
    if ctx.settings.llm_api_key:
        found.append(ctx.settings.llm_api_key)
    return found
