"""The event store of the workflow context: an eventsourcing Application on PostgreSQL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Snapshot

from command_side.errors import NotFound
from command_side.workflow.aggregate import Workflow


class WorkflowStore(Application[UUID]):
    """Stores Workflow events in `workflow_events`; its notification log feeds the relay."""

    name = "workflow"
    # Snapshots are read by `load`, but written by `snapshot` from an aggregate already in
    # memory: the library's automatic snapshots reload the aggregate inside save().
    is_snapshotting_enabled = True
    snapshot_every = 200

    def snapshot(self, workflow: Workflow) -> None:
        """Store the state of an aggregate that was just saved."""
        assert self.snapshots is not None
        self.snapshots.put([Snapshot.take(workflow)])

    def load(self, workflow_id: UUID, version: int | None = None) -> Workflow:
        """The workflow, optionally as it was at `version`; NotFound when there is none."""
        if version is not None and version < 1:
            raise NotFound(f"workflow {workflow_id} has no version {version}")
        try:
            workflow: Any = self.repository.get(workflow_id, version=version)
        except AggregateNotFoundError:
            raise NotFound(f"workflow {workflow_id} does not exist") from None
        assert isinstance(workflow, Workflow)
        if version is not None and workflow.version != version:
            raise NotFound(f"workflow {workflow_id} has no version {version}")
        return workflow

    def events_after(self, workflow_id: UUID, version: int) -> list[Any]:
        """Stored events of the workflow with a version greater than `version`."""
        return list(self.repository.event_store.get(workflow_id, gt=version))

    @property
    def events_table(self) -> str:
        return str(self.recorder.events_table_name)  # type: ignore[attr-defined]
