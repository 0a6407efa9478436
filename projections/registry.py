"""The projections this service maintains, by name (what `autoops replay --projection` takes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from projections import schema, workflows

Fold = Callable[[dict[str, Any]], list[tuple[str, tuple[Any, ...]]]]


@dataclass(frozen=True)
class Projection:
    name: str
    context: str
    ddl: tuple[str, ...]
    tables: tuple[str, ...]
    fold: Fold


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection(
            "workflows",
            "workflow",
            tuple(schema.WORKFLOWS),
            (
                "read.workflows",
                "read.workflow_nodes",
                "read.workflow_edges",
                "read.workflow_versions",
            ),
            workflows.fold_workflow,
        ),
        Projection(
            "workflow_history",
            "workflow",
            tuple(schema.HISTORY),
            ("read.workflow_history",),
            workflows.fold_history,
        ),
    )
}
