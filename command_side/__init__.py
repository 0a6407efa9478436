"""Command side: aggregates, command handlers, the event store and the outbox relay."""

from command_side.errors import CommandError, Conflict, NotFound, ValidationFailed

__all__ = ["CommandError", "Conflict", "NotFound", "ValidationFailed"]
