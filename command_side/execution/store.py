"""The event store of the execution context (table `execution_events`): executions and the
workspace credentials their steps use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from eventsourcing.persistence import StoredEvent

from command_side.identity.store import AggregateStore
from infra.errors import ConfigError
from infra.eventstore import ApplicationRecorder

#: One SQL statement and its parameters.
Statement = tuple[str, Sequence[Any]]


class ExecutionRecorder(ApplicationRecorder):
    """Runs the statements passed to `save(..., also=[...])` in the transaction that stores
    the events, before it takes the table lock: the orchestrator's timers then change with
    the events that move them, in one commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.datastore.enable_db_functions:
            # That path inserts through a database function and never calls _insert_events:
            # the statements would be dropped without a word.
            raise ConfigError(
                "the execution store needs POSTGRES_ENABLE_DB_FUNCTIONS off (the orchestrator's "
                "timers are written in the transaction of its events)"
            )

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        statements: Sequence[Statement] = kwargs.get("also") or ()
        for statement, params in statements:
            curs.execute(statement, params)
        super()._insert_events(curs, stored_events, **kwargs)


class ExecutionStore(AggregateStore):
    """Executions and credentials; its notification log feeds the relay, which also routes
    cancels and dead letters to runners."""

    name = "execution"
    env: ClassVar[dict[str, str]] = {
        "APPLICATION_RECORDER_TOPIC": f"{__name__}:{ExecutionRecorder.__name__}"
    }
