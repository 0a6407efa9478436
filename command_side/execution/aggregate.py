"""The Execution aggregate: one run of a pinned workflow graph, step by step.

The orchestrator loads it, applies what runners reported (`record_success` /
`record_failure`, which ignore reports of superseded or unknown attempts, so a redelivered
result is harmless), then calls `advance`, which turns the pure decision into events. A task
reaches a runner only from a committed `StepScheduled`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from command_side.errors import Conflict
from command_side.execution.decide import Edge, Finish, Plan, Schedule, Skip, Step, decide

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


class Execution(Aggregate):
    @staticmethod
    def create_id(execution_id: UUID, **_: Any) -> UUID:
        return execution_id

    @event("ExecutionStarted")
    def __init__(
        self,
        execution_id: UUID,
        workflow_id: str,
        workflow_version: int,
        nodes: dict[str, dict[str, Any]],
        edges: list[dict[str, Any]],
        start: str,
        inputs: dict[str, Any],
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.workflow_id = workflow_id
        self.workflow_version = workflow_version
        self.plan = Plan(
            nodes, [Edge(e["source"], e["target"], e.get("label")) for e in edges], start
        )
        self.inputs = inputs
        self.workspace_id = workspace_id
        self.status = "RUNNING"
        self.error: str | None = None
        self.steps: dict[str, Step] = {start: Step(status="succeeded", attempt=1, output=inputs)}

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    # -- reports from runners ----------------------------------------------------------------

    def _current(self, node_id: str, attempt: int) -> bool:
        step = self.steps.get(node_id)
        return (
            not self.finished
            and step is not None
            and step.status == "scheduled"
            and step.attempt == attempt
        )

    def record_success(
        self, node_id: str, attempt: int, output: Any, branch: str | None, actor_id: str
    ) -> bool:
        """False (and nothing recorded) for a report of an attempt that is not running."""
        if not self._current(node_id, attempt):
            return False
        self._step_succeeded(node_id, attempt, output, branch, actor_id, self.workspace_id)
        return True

    @event("StepSucceeded")
    def _step_succeeded(
        self,
        node_id: str,
        attempt: int,
        output: Any,
        branch: str | None,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.steps[node_id] = Step("succeeded", attempt, output=output, branch=branch)

    def record_failure(
        self, node_id: str, attempt: int, error_type: str, message: str, actor_id: str
    ) -> bool:
        if not self._current(node_id, attempt):
            return False
        self._step_failed(node_id, attempt, error_type, message, actor_id, self.workspace_id)
        return True

    @event("StepFailed")
    def _step_failed(
        self,
        node_id: str,
        attempt: int,
        error_type: str,
        message: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.steps[node_id] = Step(
            "failed", attempt, error={"type": error_type, "message": message}
        )

    # -- decisions ---------------------------------------------------------------------------

    def advance(self, now: float, actor_id: str) -> list[Schedule]:
        """Record what should happen now; returns the steps scheduled (for dispatch).

        Skips can make more decisions possible at once (a skipped branch releases the merge
        after it), so this decides again until a round skips nothing: no runner report
        would come to wake it otherwise."""
        scheduled: list[Schedule] = []
        while not self.finished:
            skipped = False
            for action in decide(self.plan, self.steps, now):
                if isinstance(action, Finish):
                    self._finished(action.status, action.error, actor_id, self.workspace_id)
                    break
                if isinstance(action, Skip):
                    self._step_skipped(action.node_id, actor_id, self.workspace_id)
                    skipped = True
                elif isinstance(action, Schedule):
                    self._step_scheduled(
                        action.node_id,
                        action.attempt,
                        action.not_before,
                        actor_id,
                        self.workspace_id,
                    )
                    scheduled.append(action)
            if not skipped:
                break
        return scheduled

    @event("StepScheduled")
    def _step_scheduled(
        self, node_id: str, attempt: int, not_before: float, actor_id: str, workspace_id: str
    ) -> None:
        self.steps[node_id] = Step("scheduled", attempt)

    @event("StepSkipped")
    def _step_skipped(self, node_id: str, actor_id: str, workspace_id: str) -> None:
        self.steps[node_id] = Step("skipped")

    @event("ExecutionFinished")
    def _finished(self, status: str, error: str | None, actor_id: str, workspace_id: str) -> None:
        self.status = status
        self.error = error

    def cancel(self, reason: str, actor_id: str) -> None:
        if self.finished:
            raise Conflict(f"the execution is {self.status} already", current_version=self.version)
        self._finished("CANCELLED", reason, actor_id, self.workspace_id)
