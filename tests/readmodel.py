"""Snapshots of the read models, to compare two ways of building them."""

from __future__ import annotations

from typing import Any

import psycopg

QUERIES = {
    "workflows": "SELECT id, workspace_id, name, description, version, node_count, edge_count,"
    " published_version, created_at, created_by, updated_at, updated_by"
    " FROM read.workflows ORDER BY id",
    "nodes": "SELECT * FROM read.workflow_nodes ORDER BY workflow_id, node_id",
    "edges": "SELECT * FROM read.workflow_edges ORDER BY workflow_id, edge_id",
    "versions": "SELECT * FROM read.workflow_versions ORDER BY workflow_id, number",
    "history": "SELECT * FROM read.workflow_history ORDER BY workflow_id, version",
    "tracking": "SELECT * FROM read.projection_tracking ORDER BY projection, aggregate_id",
}


def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(database_url) as conn:
        return {name: conn.execute(sql).fetchall() for name, sql in QUERIES.items()}
