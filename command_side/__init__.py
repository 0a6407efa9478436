"""Command side: aggregates, command handlers, the event store and the outbox relay."""

from command_side.errors import (
    CommandError,
    Conflict,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)

__all__ = [
    "CommandError",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Unauthenticated",
    "ValidationFailed",
]
