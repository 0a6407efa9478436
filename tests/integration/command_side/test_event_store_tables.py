"""Every process opens the event stores as it starts, and `autoops up` starts them all at once:
their tables must be created once whoever comes first, never fail the others."""

from __future__ import annotations

import threading

from command_side.execution.store import ExecutionStore
from command_side.identity.store import IdentityStore
from command_side.store import WorkflowStore
from infra.settings import eventsourcing_env_for

STORES = (WorkflowStore, IdentityStore, ExecutionStore)


def test_processes_starting_together_on_an_empty_database_all_open_their_stores(
    database_url: str,
) -> None:
    env = eventsourcing_env_for(database_url)
    starting = 6
    gate = threading.Barrier(starting)
    failures: list[BaseException] = []

    def process() -> None:
        gate.wait()
        try:
            for store in [cls(env=env) for cls in STORES]:
                store.close()
        except Exception as exc:  # collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=process) for _ in range(starting)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # And the tables work: a store opened afterwards reads them.
    store = WorkflowStore(env=env)
    try:
        assert store.recorder.max_notification_id() in (None, 0)  # type: ignore[attr-defined]
    finally:
        store.close()
