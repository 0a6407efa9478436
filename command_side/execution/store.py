"""The event store of the execution context (table `execution_events`): executions and the
workspace credentials their steps use."""

from __future__ import annotations

from command_side.identity.store import AggregateStore


class ExecutionStore(AggregateStore):
    """Executions and credentials; its notification log feeds the relay, which also routes
    cancels and dead letters to runners."""

    name = "execution"
