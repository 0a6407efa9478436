"""The node type catalog and workflow validation."""

from __future__ import annotations

from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from command_side.workflow.graph_check import check_graph
from command_side.workflow.node_types import NODE_TYPES
from query_side import views
from web.auth import SECURED
from web.graphql.context import caller, services
from web.graphql.errors import parse_id
from web.graphql.own_writes import read_deadline, recorded_read, wait_for_version


@strawberry.type
class NodeType:
    type: str
    category: str
    description: str
    pool: str = strawberry.field(description="The runner pool that executes it.")
    config_schema: JSON = strawberry.field(description="JSON Schema of a complete config.")


@strawberry.type
class WorkflowProblem:
    code: str = strawberry.field(
        description="MISSING_TRIGGER, CYCLE, UNREACHABLE, INVALID_CONFIG, INVALID_CONDITION, "
        "NOT_UPSTREAM (a template reads a step that does not run before its own), "
        "INVALID_LABEL (an edge label its source never takes), LOOP_BODY_EDGE (an edge into "
        "or out of a loop's body other than through its loop) or RESERVED_ID (a body node "
        "named `item`)."
    )
    message: str
    node_ids: list[strawberry.ID]


@strawberry.type
class WorkflowValidation:
    valid: bool
    problems: list[WorkflowProblem]


@strawberry.type
class NodeTypeQuery:
    @strawberry.field(permission_classes=SECURED, description="Every node type, by name.")
    def node_types(self) -> list[NodeType]:
        return [
            NodeType(
                type=t.type,
                category=t.category,
                description=t.description,
                pool=t.pool,
                config_schema=cast(JSON, t.schema),
            )
            for t in sorted(NODE_TYPES.values(), key=lambda t: t.type)
        ]

    @strawberry.field(
        permission_classes=SECURED,
        description="Everything that keeps the workflow's current draft from running: "
        "cycles (except through a loop node), nodes no trigger reaches, a missing trigger, "
        "incomplete or invalid configs and conditions, templates reading a step that is not "
        "upstream of theirs.",
    )
    async def validate_workflow(
        self, info: Info[Any, Any], id: strawberry.ID, at_least_version: int | None = None
    ) -> WorkflowValidation:
        who, svc = caller(info), services(info)
        workflow_id = parse_id(id)
        deadline = read_deadline(svc)  # one bound for both waits
        if at_least_version is not None:
            await wait_for_version(svc, who.workspace_id, workflow_id, at_least_version, deadline)

        async def read() -> dict[str, Any] | None:
            async with svc.reader(who) as conn:
                return await views.get_workflow(conn, who.workspace_id, workflow_id)

        row = await recorded_read(svc, who.workspace_id, workflow_id, read, deadline=deadline)
        nodes = {n["node_id"]: {"type": n["type"], "config": n["config"]} for n in row["nodes"]}
        edges = [(e["source_id"], e["target_id"], e["label"]) for e in row["edges"]]
        conditions = {
            (e["source_id"], e["target_id"]): e["condition"] for e in row["edges"] if e["condition"]
        }
        problems = check_graph(nodes, edges, conditions)
        return WorkflowValidation(
            valid=not problems,
            problems=[
                WorkflowProblem(
                    code=p.code,
                    message=p.message,
                    node_ids=[strawberry.ID(n) for n in p.node_ids],
                )
                for p in problems
            ],
        )
