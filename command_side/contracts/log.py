"""Reading the event log back as envelopes: for replay and for filling a consumer's gap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from command_side.contracts.envelope import Envelope, to_envelope
from command_side.execution.store import ExecutionStore
from command_side.identity.store import IdentityStore
from command_side.store import WorkflowStore

#: The event store of each context that has one.
STORES: dict[str, type[WorkflowStore] | type[IdentityStore] | type[ExecutionStore]] = {
    "workflow": WorkflowStore,
    "identity": IdentityStore,
    "execution": ExecutionStore,
}


class EventLog:
    """One context's stored events, in notification order, as public envelopes."""

    def __init__(self, eventsourcing_env: dict[str, str], context: str = "workflow") -> None:
        self.context = context
        self._store = STORES[context](env=eventsourcing_env)

    def read(self, after: int = 0, batch: int = 5000) -> Iterator[list[Envelope]]:
        """Every envelope after position `after`, in batches."""
        recorder = self._store.recorder
        while True:
            notifications = recorder.select_notifications(
                start=after, limit=batch, inclusive_of_start=False
            )
            if not notifications:
                return
            mapper = self._store.mapper
            yield [
                to_envelope(self.context, mapper.to_domain_event(n), n.id) for n in notifications
            ]
            after = notifications[-1].id

    def count(self) -> int:
        return int(self._store.recorder.max_notification_id() or 0)

    def position_before(self, at: float) -> int:
        """A position after which `read` gives every event stored at `at` or later, and few
        before: found by bisection (log2 of the log's length reads), since events are
        numbered in the order they were stored. Times of events committed side by side may
        interleave a little: ask for a margin before the time wanted."""
        recorder, mapper = self._store.recorder, self._store.mapper
        low, high = 0, self.count()
        while low < high:
            middle = (low + high + 1) // 2
            found = recorder.select_notifications(start=middle, limit=1)  # the first ≥ middle
            if not found or found[0].id > high:
                high = middle - 1
            elif _stored_at(mapper.to_domain_event(found[0])) < at:
                low = found[0].id
            else:
                high = middle - 1
        return low

    def aggregate(self, aggregate_id: str, after_version: int) -> list[Envelope]:
        """Envelopes of one aggregate after a version (position unknown here: 0)."""
        events = self._store.repository.event_store.get(UUID(aggregate_id), gt=after_version)
        return [to_envelope(self.context, e, 0) for e in events]

    def close(self) -> None:
        self._store.close()


def _stored_at(event: Any) -> float:
    return float(event.timestamp.timestamp())
