"""The projections this service maintains, by name (what `autoops replay --projection` takes).

Each projection's fold is a SQL function, `read.apply_<name>(events jsonb)`, in `sql/`: a
batch of envelopes goes to PostgreSQL in one call and is folded there in order, so the live
projector and replay run the very same code, with one round trip per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from projections import schema


@dataclass(frozen=True)
class Projection:
    name: str
    context: str
    ddl: tuple[str, ...]
    tables: tuple[str, ...]

    @property
    def fold_function(self) -> str:
        return f"read.apply_{self.name}"


def _fold_sql(name: str) -> str:
    return resources.files("projections").joinpath("sql", f"{name}.sql").read_text()


PROJECTIONS: dict[str, Projection] = {
    p.name: p
    for p in (
        Projection(
            "workflows",
            "workflow",
            (*schema.WORKFLOWS, _fold_sql("workflows")),
            (
                "read.workflows",
                "read.workflow_nodes",
                "read.workflow_edges",
                "read.workflow_locks",
                "read.workflow_threads",
                "read.workflow_comments",
                "read.workflow_versions",
            ),
        ),
        Projection(
            "workflow_history",
            "workflow",
            (*schema.HISTORY, _fold_sql("workflow_history")),
            ("read.workflow_history",),
        ),
        Projection(
            "identity",
            "identity",
            (*schema.IDENTITY, _fold_sql("identity")),
            ("read.users", "read.workspaces", "read.workspace_members"),
        ),
        Projection(
            "audit_log",
            "identity",
            (*schema.AUDIT, _fold_sql("audit_log")),
            ("read.audit_log",),
        ),
        Projection(
            "executions",
            "execution",
            (*schema.EXECUTIONS, _fold_sql("executions")),
            ("read.executions", "read.execution_steps", "read.credentials", "read.variables"),
        ),
    )
}
