"""The event store of the identity context (table `identity_events`)."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from command_side.errors import NotFound
from command_side.identity.aggregates import Session, User

A = TypeVar("A", bound=Aggregate)


class AggregateStore(Application[UUID]):
    """An event store holding several kinds of aggregate, each looked up by kind."""

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


class IdentityStore(AggregateStore):
    """Users, addresses, workspaces and sessions; its notification log feeds the relay."""

    name = "identity"
    is_snapshotting_enabled = True
    # Logins and refreshes make these streams long; their snapshots keep loads short.
    snapshotting_intervals = {User: 100, Session: 100}
