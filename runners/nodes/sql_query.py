"""`sql.query`: one parameterised statement on a customer's PostgreSQL database."""

from __future__ import annotations

from typing import Any

from infra.sql_client import SqlClient, SqlFailed
from runners.nodes.context import StepContext
from runners.nodes.errors import StepError
from runners.nodes.jsonable import to_jsonable
from runners.nodes.watch import watch


def sql_query(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    secret = ctx.credential(config.get("credential"), "postgres")
    query = config.get("query")
    if not isinstance(query, str) or not query.strip():
        raise StepError("ConfigError", "query must be a non-empty SQL statement")
    parameters = config.get("parameters") or []
    if not isinstance(parameters, list):
        raise StepError("ConfigError", "parameters must be a list")
    seconds = ctx.time_left(config)
    client = SqlClient(
        secret["url"],
        statement_timeout_s=min(ctx.settings.sql_statement_timeout_s, seconds),
        connect_timeout_s=min(seconds, 10.0),
    )
    with watch(ctx.cancelled, client.cancel, seconds=seconds) as watching:
        try:
            result = client.run(query, parameters)
        except SqlFailed as exc:
            if watching.reason == "timeout":
                message = "the statement outlived the step's timeout"
                raise StepError("StepTimeout", message, retryable=True) from None
            if exc.cancelled or ctx.cancelled.is_set():
                raise StepError("Cancelled", "the step was cancelled") from None
            raise StepError("SqlError", exc.message, retryable=exc.retryable) from None
    return {
        "rows": [
            {column: to_jsonable(value) for column, value in zip(result.columns, row, strict=True)}
            for row in result.rows
        ],
        "row_count": result.row_count,
        "columns": result.columns,
    }
