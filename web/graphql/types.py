"""GraphQL output types."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON


@strawberry.type
class Node:
    id: strawberry.ID
    type: str
    name: str
    config: JSON
    x: float
    y: float


@strawberry.type
class Edge:
    id: strawberry.ID
    source_id: strawberry.ID
    target_id: strawberry.ID
    label: str | None
    condition: str | None


@strawberry.type(description="A node someone is editing: others' edits of it fail with LOCKED.")
class NodeLock:
    node_id: strawberry.ID
    holder: str = strawberry.field(description="The user id of who holds it.")
    expires_at: datetime


@strawberry.type
class PublishedVersion:
    number: int
    aggregate_version: int
    note: str
    published_at: datetime | None
    published_by: str | None


@strawberry.type
class Workflow:
    id: strawberry.ID
    workspace_id: str
    name: str
    description: str
    version: int
    node_count: int
    edge_count: int
    published_version: int | None
    created_at: datetime | None
    created_by: str | None
    updated_at: datetime | None
    updated_by: str | None
    nodes: list[Node]
    edges: list[Edge]
    versions: list[PublishedVersion]
    locks: list[NodeLock] = strawberry.field(
        default_factory=list, description="Locks whose lease runs (empty in time travel)."
    )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Workflow:
        return cls(
            id=strawberry.ID(str(row["id"])),
            workspace_id=row["workspace_id"],
            name=row["name"],
            description=row["description"],
            version=row["version"],
            node_count=row["node_count"],
            edge_count=row["edge_count"],
            published_version=row["published_version"],
            created_at=row["created_at"],
            created_by=row["created_by"],
            updated_at=row["updated_at"],
            updated_by=row["updated_by"],
            nodes=[
                Node(
                    id=strawberry.ID(n["node_id"]),
                    type=n["type"],
                    name=n["name"],
                    config=n["config"],
                    x=n["x"],
                    y=n["y"],
                )
                for n in row.get("nodes", [])
            ],
            edges=[
                Edge(
                    id=strawberry.ID(e["edge_id"]),
                    source_id=strawberry.ID(e["source_id"]),
                    target_id=strawberry.ID(e["target_id"]),
                    label=e["label"],
                    condition=e["condition"],
                )
                for e in row.get("edges", [])
            ],
            versions=[PublishedVersion(**v) for v in row.get("versions", [])],
            locks=[
                NodeLock(
                    node_id=strawberry.ID(lock["node_id"]),
                    holder=lock["holder"],
                    expires_at=lock["expires_at"],
                )
                for lock in row.get("locks", [])
            ],
        )

    @classmethod
    def from_graph(
        cls, graph: dict[str, Any], created_at: datetime, updated_at: datetime
    ) -> Workflow:
        """A workflow rebuilt from the event store (time travel)."""
        nodes, edges = graph["nodes"], graph["edges"]
        published = graph["published"]
        return cls(
            id=strawberry.ID(graph["id"]),
            workspace_id=graph["workspace_id"],
            name=graph["name"],
            description=graph["description"],
            version=graph["version"],
            node_count=len(nodes),
            edge_count=len(edges),
            published_version=published[-1]["number"] if published else None,
            created_at=created_at,
            created_by=None,
            updated_at=updated_at,
            updated_by=None,
            nodes=[
                Node(
                    id=strawberry.ID(k),
                    type=n["type"],
                    name=n["name"],
                    config=n["config"],
                    x=n["x"],
                    y=n["y"],
                )
                for k, n in sorted(nodes.items())
            ],
            edges=[
                Edge(
                    id=strawberry.ID(k),
                    source_id=strawberry.ID(e["source"]),
                    target_id=strawberry.ID(e["target"]),
                    label=e["label"],
                    condition=e["condition"],
                )
                for k, e in sorted(edges.items())
            ],
            versions=[
                PublishedVersion(
                    number=p["number"],
                    aggregate_version=p["version"],
                    note=p["note"],
                    published_at=None,
                    published_by=None,
                )
                for p in published
            ],
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class WorkflowConnection:
    nodes: list[Workflow]
    page_info: PageInfo


@strawberry.type
class WorkflowEvent:
    """One event of a workflow: history rows and subscription messages."""

    workflow_id: strawberry.ID
    version: int
    type: str
    actor_id: str
    occurred_at: datetime
    payload: JSON

    @classmethod
    def from_row(cls, workflow_id: str, row: dict[str, Any]) -> WorkflowEvent:
        return cls(
            workflow_id=strawberry.ID(workflow_id),
            version=row["version"],
            type=row["type"],
            actor_id=row["actor_id"],
            occurred_at=row["occurred_at"],
            payload=row["payload"],
        )


@strawberry.type
class WorkflowHistoryConnection:
    nodes: list[WorkflowEvent]
    page_info: PageInfo


@strawberry.type
class WorkflowPayload:
    """What a workflow mutation did."""

    workflow_id: strawberry.ID
    version: int
    node_id: strawberry.ID | None = None
    edge_id: strawberry.ID | None = None
    version_number: int | None = None
