"""Starts are group-committed: many callers, few transactions, and a duplicate id refused
alone while the others in its batch start."""

from __future__ import annotations

from concurrent.futures import wait
from uuid import uuid4

import pytest

from command_side.errors import Conflict, ValidationFailed
from command_side.execution.aggregate import Execution
from command_side.execution.service import ExecutionService
from command_side.execution.starter import ExecutionStarter
from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from infra.settings import eventsourcing_env_for


def test_many_starts_few_transactions_and_a_duplicate_refused_alone(database_url: str) -> None:
    env = eventsourcing_env_for(database_url)
    workflows, executions = WorkflowStore(env=env), ExecutionStore(env=env)
    meta = Meta(actor_id="u1", workspace_id="ws1", client_op_id=None)
    workflow = Workflow.create(uuid4(), "wf", "", meta)
    workflow.add_node("trigger.manual", "start", {}, 0, 0, meta, node_id="start")
    workflow.add_node(
        "data.transform", "t", {"fields": {"n": "{{ inputs.n }}"}}, 0, 0, meta, node_id="t"
    )
    workflow.connect("start", "t", None, None, meta)
    workflow.publish("", meta)
    workflows.save(workflow)
    starter = ExecutionStarter(ExecutionService(executions, workflows))
    try:
        taken = uuid4()
        first = starter.submit(
            workspace_id="ws1",
            actor_id="u1",
            workflow_id=str(workflow.id),
            inputs={},
            execution_id=taken,
        )
        assert first.result(10) == taken
        futures = [
            starter.submit(
                workspace_id="ws1", actor_id="u1", workflow_id=str(workflow.id), inputs={"n": i}
            )
            for i in range(200)
        ]
        duplicate = starter.submit(
            workspace_id="ws1",
            actor_id="u1",
            workflow_id=str(workflow.id),
            inputs={},
            execution_id=taken,
        )
        foreign = starter.submit(
            workspace_id="ws2", actor_id="u1", workflow_id=str(workflow.id), inputs={}
        )
        wait([*futures, duplicate, foreign], timeout=30)
        ids = [f.result() for f in futures]
        assert len(set(ids)) == 200
        assert executions.get(Execution, ids[7]).inputs == {"n": 7}
        with pytest.raises(Conflict):
            duplicate.result()
        with pytest.raises(Exception) as hidden:
            foreign.result()
        assert not isinstance(hidden.value, ValidationFailed)  # NOT_FOUND: not theirs
        assert starter.batches < 100
    finally:
        starter.stop()
        workflows.close()
        executions.close()
