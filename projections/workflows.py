"""Pure folds: one envelope in, the SQL statements that apply it to the read models out."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

Statement = tuple[str, tuple[Any, ...]]


def _update(env: dict[str, Any], nodes: int = 0, edges: int = 0, **columns: Any) -> Statement:
    """The one UPDATE of the workflow row an event causes: version, who, when, its columns."""
    sets = "".join(f", {column} = %s" for column in columns)
    return (
        "UPDATE read.workflows SET version = %s, updated_at = %s, updated_by = %s,"
        f" node_count = node_count + %s, edge_count = edge_count + %s{sets} WHERE id = %s",
        (
            env["aggregate_version"],
            env["occurred_at"],
            env["actor_id"],
            nodes,
            edges,
            *columns.values(),
            env["aggregate_id"],
        ),
    )


def fold_workflow(env: dict[str, Any]) -> list[Statement]:
    """Workflow list, detail (nodes, edges) and published versions."""
    kind, d, wid, ws = env["type"], env["data"], env["aggregate_id"], env["workspace_id"]
    if kind == "workflow.Created":
        return [
            (
                "INSERT INTO read.workflows (id, workspace_id, name, description, version,"
                " created_at, created_by, updated_at, updated_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    wid,
                    ws,
                    d["name"],
                    d["description"],
                    env["aggregate_version"],
                    env["occurred_at"],
                    env["actor_id"],
                    env["occurred_at"],
                    env["actor_id"],
                ),
            )
        ]
    if kind == "workflow.Renamed":
        return [_update(env, name=d["name"])]
    if kind == "workflow.DescriptionChanged":
        return [_update(env, description=d["description"])]
    if kind == "workflow.NodeAdded":
        return [
            (
                "INSERT INTO read.workflow_nodes (workflow_id, node_id, workspace_id, type, name,"
                " config, x, y) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    wid,
                    d["node_id"],
                    ws,
                    d["node_type"],
                    d["name"],
                    Jsonb(d["config"]),
                    d["x"],
                    d["y"],
                ),
            ),
            _update(env, nodes=1),
        ]
    if kind == "workflow.NodeUpdated":
        return [
            (
                "UPDATE read.workflow_nodes SET name = COALESCE(%s, name), "
                "config = COALESCE(%s, config) WHERE workflow_id = %s AND node_id = %s",
                (d["name"], None if d["config"] is None else Jsonb(d["config"]), wid, d["node_id"]),
            ),
            _update(env),
        ]
    if kind == "workflow.NodeMoved":
        return [
            (
                "UPDATE read.workflow_nodes SET x = %s, y = %s "
                "WHERE workflow_id = %s AND node_id = %s",
                (d["x"], d["y"], wid, d["node_id"]),
            ),
            _update(env),
        ]
    if kind == "workflow.NodeRemoved":
        return [
            (
                "DELETE FROM read.workflow_nodes WHERE workflow_id = %s AND node_id = %s",
                (wid, d["node_id"]),
            ),
            (
                "DELETE FROM read.workflow_edges WHERE workflow_id = %s AND edge_id = ANY(%s)",
                (wid, list(d["removed_edge_ids"])),
            ),
            _update(env, nodes=-1, edges=-len(d["removed_edge_ids"])),
        ]
    if kind == "workflow.NodesConnected":
        return [
            (
                "INSERT INTO read.workflow_edges (workflow_id, edge_id, workspace_id, source_id,"
                " target_id, label, condition) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (wid, d["edge_id"], ws, d["source_id"], d["target_id"], d["label"], d["condition"]),
            ),
            _update(env, edges=1),
        ]
    if kind == "workflow.NodesDisconnected":
        return [
            (
                "DELETE FROM read.workflow_edges WHERE workflow_id = %s AND edge_id = %s",
                (wid, d["edge_id"]),
            ),
            _update(env, edges=-1),
        ]
    if kind == "workflow.Published":
        return [
            (
                "INSERT INTO read.workflow_versions (workflow_id, number, workspace_id,"
                " aggregate_version, note, published_at, published_by, graph)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, jsonb_build_object("
                "  'nodes', COALESCE((SELECT jsonb_agg(to_jsonb(n) - 'workspace_id'"
                "   - 'workflow_id' ORDER BY n.node_id) FROM read.workflow_nodes n"
                "   WHERE n.workflow_id = %s), '[]'),"
                "  'edges', COALESCE((SELECT jsonb_agg(to_jsonb(e) - 'workspace_id'"
                "   - 'workflow_id' ORDER BY e.edge_id) FROM read.workflow_edges e"
                "   WHERE e.workflow_id = %s), '[]'))",
                (
                    wid,
                    d["version_number"],
                    ws,
                    env["aggregate_version"] - 1,
                    d["note"],
                    env["occurred_at"],
                    env["actor_id"],
                    wid,
                    wid,
                ),
            ),
            _update(env, published_version=d["version_number"]),
        ]
    return [_update(env)]


def fold_history(env: dict[str, Any]) -> list[Statement]:
    """One row per event, with who did it and when."""
    return [
        (
            "INSERT INTO read.workflow_history (workflow_id, version, workspace_id, event_id, type,"
            " actor_id, occurred_at, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                env["aggregate_id"],
                env["aggregate_version"],
                env["workspace_id"],
                env["event_id"],
                env["type"].split(".", 1)[1],
                env["actor_id"],
                env["occurred_at"],
                Jsonb(env["data"]),
            ),
        )
    ]
