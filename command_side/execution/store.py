"""The event store of the execution context (table `execution_events`): executions and the
workspace credentials their steps use."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from command_side.errors import NotFound

A = TypeVar("A", bound=Aggregate)


class ExecutionStore(Application[UUID]):
    """Executions and credentials; its notification log feeds the relay, which also routes
    the runner-facing events (tasks, cancels, dead letters)."""

    name = "execution"

    def get(self, kind: type[A], aggregate_id: UUID) -> A:
        """The aggregate, or NotFound."""
        try:
            found: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{kind.__name__.lower()} {aggregate_id} does not exist") from None
        if not isinstance(found, kind):
            raise NotFound(f"{kind.__name__.lower()} {aggregate_id} does not exist")
        return found

    def find(self, kind: type[A], aggregate_id: UUID) -> A | None:
        try:
            return self.get(kind, aggregate_id)
        except NotFound:
            return None

    @property
    def events_table(self) -> str:
        return str(self.recorder.events_table_name)  # type: ignore[attr-defined]
