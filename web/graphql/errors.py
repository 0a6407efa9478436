"""The one place that turns domain errors into GraphQL errors with `extensions.code`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from command_side.errors import CommandError, Conflict, Locked
from query_side.errors import QueryError
from web.auth.throttle import RateLimited

log = logging.getLogger(__name__)


def graphql_error(code: str, message: str, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extensions})


def not_found(what: str) -> GraphQLError:
    return graphql_error("NOT_FOUND", f"{what} does not exist")


def not_projected(what: str) -> GraphQLError:
    """Recorded, but the read model has not caught up within the read wait: ask again."""
    return graphql_error(
        "UNAVAILABLE", f"{what} is recorded but not readable yet; try again", retryAfter=1
    )


def parse_id(value: str, what: str = "workflow") -> UUID:
    """Ids that are not ours cannot name anything: NOT_FOUND, as for any unknown id."""
    try:
        return UUID(str(value))
    except ValueError:
        raise not_found(f"{what} {value!r}") from None


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Re-raise command and query errors as typed GraphQL errors."""
    try:
        yield
    except Conflict as exc:
        raise graphql_error(exc.code, exc.message, currentVersion=exc.current_version) from exc
    except Locked as exc:
        expires = datetime.fromtimestamp(exc.expires_at, UTC).isoformat()
        raise graphql_error(
            exc.code, exc.message, holder=exc.holder, expiresAt=expires,
            nodeId=str(exc.details.get("node_id", "")),
        ) from exc  # fmt: skip
    except CommandError as exc:
        extra = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, bool))}
        raise graphql_error(exc.code, exc.message, **extra) from exc
    except QueryError as exc:
        raise graphql_error(exc.code, str(exc)) from exc
    except RateLimited as exc:
        raise graphql_error("RATE_LIMITED", str(exc), retryAfter=exc.retry_after_s) from exc


class MaskInternalErrors(MaskErrors):
    """Errors without a code are bugs: log them, answer `INTERNAL` without details."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="internal error")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if error.original_error is not None:
            log.error("unhandled error in %s", error.path, exc_info=error.original_error)
        return GraphQLError(
            "internal error", nodes=error.nodes, path=error.path, extensions={"code": "INTERNAL"}
        )


def _is_internal(error: GraphQLError) -> bool:
    # Errors graphql-core raises itself (syntax, unknown field, bad variable) have no
    # original error: those are the client's, with a message worth keeping.
    if error.original_error is None:
        return False
    return not (error.extensions or {}).get("code")


def label_client_errors(errors: list[GraphQLError]) -> None:
    """graphql-core's own errors (syntax, unknown field, wrong variable type) are the
    client's: they get `VALIDATION`."""
    for error in errors:
        if error.original_error is None and not (error.extensions or {}).get("code"):
            error.extensions = {**(error.extensions or {}), "code": "VALIDATION"}
