"""Building, publishing and running workflows through GraphQL, for execution tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.graphql_client import GraphQLClient, GraphQLError

CREATE = "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { workflowId version } }"
ADD = "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }"
CONNECT = "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { edgeId } }"
PUBLISH = "mutation($i: PublishWorkflowInput!) { publishWorkflow(input: $i) { versionNumber } }"
START = "mutation($i: StartExecutionInput!) { startExecution(input: $i) { executionId status } }"
CANCEL = "mutation($i: CancelExecutionInput!) { cancelExecution(input: $i) { status } }"
RETRY = "mutation($i: RetryExecutionInput!) { retryExecution(input: $i) { executionId } }"
REPLAY = """mutation($id: ID!) { replayExecution(executionId: $id) {
  status replayedSteps deterministic divergences { nodeId expected actual } } }"""
CREDENTIAL = "mutation($i: CreateCredentialInput!) { createCredential(input: $i) { name kind } }"
EXECUTION = """query($id: ID!) { execution(id: $id) {
  id workflowId workflowVersion status error inputs output trigger retryOf parentId
  createdAt startedAt finishedAt
  steps { nodeId nodeType attempt status input output error { type message retryable details }
          scheduledAt startedAt finishedAt durationMs runnerId
          artifacts { sha256 size mediaType downloadUrl } } } }"""
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")

#: (source, target), with a label, and a condition (label None for none).
Edge = tuple[str, str] | tuple[str, str, str] | tuple[str, str, str | None, str]


async def build(
    client: GraphQLClient,
    nodes: dict[str, tuple[str, dict[str, Any]]],
    edges: list[Edge],
    publish: bool = True,
) -> str:
    """A workflow with these nodes (id → (type, config)) and edges, published once."""
    created = await client.execute(CREATE, {"i": {"name": f"wf-{time.monotonic_ns()}"}})
    workflow_id = created["createWorkflow"]["workflowId"]
    for node_id, (kind, config) in nodes.items():
        await client.execute(
            ADD,
            {"i": {"workflowId": workflow_id, "nodeId": node_id, "type": kind, "config": config}},
        )
    for edge in edges:
        link: dict[str, Any] = {"workflowId": workflow_id, "sourceId": edge[0], "targetId": edge[1]}
        if len(edge) > 2 and edge[2] is not None:
            link["label"] = edge[2]  # type: ignore[misc]
        if len(edge) > 3:
            link["condition"] = edge[3]  # type: ignore[misc]
        await client.execute(CONNECT, {"i": link})
    if publish:
        await client.execute(PUBLISH, {"i": {"workflowId": workflow_id}})
    return str(workflow_id)


async def start(client: GraphQLClient, workflow_id: str, inputs: Any = None, **extra: Any) -> str:
    data = await client.execute(
        START, {"i": {"workflowId": workflow_id, "inputs": inputs or {}, **extra}}
    )
    return str(data["startExecution"]["executionId"])


async def execution(client: GraphQLClient, execution_id: str) -> dict[str, Any] | None:
    """The execution's read model; None while the projector is further behind than the api's
    read wait (a loaded machine, a projector restarting)."""
    try:
        data = await client.execute(EXECUTION, {"id": execution_id})
    except GraphQLError as exc:
        if exc.codes == ["UNAVAILABLE"]:
            return None
        raise
    return data["execution"]  # type: ignore[no-any-return]


async def wait_for(
    client: GraphQLClient,
    execution_id: str,
    statuses: tuple[str, ...] = FINAL,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The execution once its read model shows one of `statuses`."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = await execution(client, execution_id)
        if last is not None and last["status"] in statuses:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} never reached {statuses}; last: {last}")


async def run(
    client: GraphQLClient, workflow_id: str, inputs: Any = None, timeout: float = 30.0
) -> dict[str, Any]:
    return await wait_for(client, await start(client, workflow_id, inputs), timeout=timeout)


def steps_of(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The latest attempt of each node."""
    latest: dict[str, dict[str, Any]] = {}
    for step in execution["steps"]:
        if step["nodeId"] not in latest or step["attempt"] >= latest[step["nodeId"]]["attempt"]:
            latest[step["nodeId"]] = step
    return latest


def failure(execution: dict[str, Any]) -> str:
    """What went wrong, for assertion messages."""
    failed = [
        f"{s['nodeId']}#{s['attempt']}: {s['error']}" for s in execution["steps"] if s["error"]
    ]
    return f"{execution['status']}: {execution['error']}; steps: {'; '.join(failed)}"
