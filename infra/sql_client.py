"""A client for a *customer's* PostgreSQL database (the `sql.query` step), never AutoOps' own.

Runners may not import psycopg (their import contract keeps them off our database), so the
driver stays behind this adapter: one statement per connection, parameters only through
placeholders, a statement timeout, cancellation from another thread, and errors that say
whether trying again can help, with the URL's password removed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

from infra.errors import InfraError
from infra.secrets import redact, secret_strings

#: Failures where the same statement may well succeed on a new attempt.
_TRANSIENT = (
    errors.SerializationFailure,
    errors.DeadlockDetected,
    errors.AdminShutdown,
    errors.CannotConnectNow,
    errors.ConnectionFailure,
    errors.TooManyConnections,
)

_LASTING_CONNECT_FAILURES = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid",
)


class SqlFailed(InfraError):
    """The statement did not run to the end; `retryable` when a new attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool = False, cancelled: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.cancelled = cancelled


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    row_count: int


class SqlClient:
    """Runs one statement on the database at `url`; `cancel()` (from any thread) stops it."""

    def __init__(self, url: str, *, statement_timeout_s: float, connect_timeout_s: float):
        self._url = url
        self._statement_timeout_ms = max(1, int(statement_timeout_s * 1000))
        self._connect_timeout_s = max(2, int(connect_timeout_s))  # libpq's floor is 2 s
        self._secrets = secret_strings({"url": url})
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        self._cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            connection = self._connection
        if connection is not None:
            # Already finished or gone: nothing left to stop.
            with contextlib.suppress(psycopg.Error):
                connection.cancel_safe(timeout=5)

    def run(self, query: str, parameters: Sequence[Any] = ()) -> QueryResult:
        """Run `query` (placeholders `%s`; autocommit: one statement is one transaction) and
        return every row."""
        try:
            connection = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout_s
            )
        except psycopg.Error as exc:
            # libpq gives no SQLSTATE here: only the text tells a refusal from an outage.
            lasting = any(marker in str(exc) for marker in _LASTING_CONNECT_FAILURES)
            raise self._failed("cannot connect", exc, retryable=not lasting) from None
        with connection:
            with self._lock:
                if self._cancelled:
                    raise SqlFailed("cancelled before the statement started", cancelled=True)
                self._connection = connection
            try:
                return self._execute(connection, query, parameters)
            finally:
                with self._lock:
                    self._connection = None

    def _execute(
        self, connection: psycopg.Connection[Any], query: str, parameters: Sequence[Any]
    ) -> QueryResult:
        try:
            connection.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                [str(self._statement_timeout_ms)],
            )
            with connection.cursor() as cursor:
                cursor.execute(query.encode(), [_adapted(p) for p in parameters] or None)
                if cursor.description is None:
                    return QueryResult([], [], max(cursor.rowcount, 0))
                rows = cursor.fetchall()
                columns = [column.name for column in cursor.description]
                return QueryResult(columns, rows, len(rows))
        except errors.QueryCanceled as exc:
            if self._cancelled:
                raise SqlFailed("cancelled", cancelled=True) from None
            raise self._failed("statement timed out or was cancelled", exc) from None
        except _TRANSIENT as exc:
            raise self._failed("transient failure", exc, retryable=True) from None
        except psycopg.OperationalError as exc:
            # The connection broke under the statement (closed server-side, network lost).
            retryable = connection.closed or connection.broken
            raise self._failed("the statement failed", exc, retryable=retryable) from None
        except psycopg.Error as exc:
            raise self._failed("the statement failed", exc) from None

    def _failed(self, what: str, exc: psycopg.Error, *, retryable: bool = False) -> SqlFailed:
        detail = str(exc).strip() or type(exc).__name__
        sqlstate = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        message = redact(f"{what}{sqlstate}: {detail}", self._secrets)
        return SqlFailed(message, retryable=retryable)


def _adapted(value: Any) -> Any:
    """JSON parameters as PostgreSQL values: an object becomes jsonb (a list an array)."""
    return Jsonb(value) if isinstance(value, dict) else value
