"""What the relay sends to runners besides the public event: tasks, cancels, dead letters.

Each comes from a committed execution event, so a task never reaches a runner for a decision
that was not stored. On a re-publication after the broker lost its data, these are not sent
again (the relay keeps a separate high-water mark): steps whose tasks were lost with the
broker are redelivered by the orchestrator when their heartbeat lapses.
"""

from __future__ import annotations

from typing import Any

TASKS_TOPIC = "autoops.runner.tasks.{pool}"
CONTROL_TOPIC = "autoops.runner.control"
DLQ_TOPIC = "autoops.runner.dlq"
#: Failures after which the attempt's runner should stop working on it.
ABANDONED = frozenset({"StepTimeout", "HeartbeatTimeout"})

Message = tuple[str, str, dict[str, Any]]  # topic, key, value


def runner_messages(event: Any) -> list[Message]:
    kind = type(event).__name__
    execution_id = str(event.originator_id)
    if kind in ("StepScheduled", "StepDispatched"):
        task = getattr(event, "task", None)
        if task:
            return [(TASKS_TOPIC.format(pool=task.get("pool") or "default"), execution_id, task)]
        return []
    if kind == "StepFailed":
        messages: list[Message] = []
        task_id = f"{execution_id}:{event.node_id}:{event.attempt}"
        if event.error_type in ABANDONED:
            messages.append(
                (CONTROL_TOPIC, execution_id, _cancel(execution_id, task_id, event.error_type))
            )
        if event.dead_letter:
            messages.append(
                (
                    DLQ_TOPIC,
                    execution_id,
                    {
                        "kind": "dead_letter",
                        "execution_id": execution_id,
                        "node_id": event.node_id,
                        "task_id": task_id,
                        **event.dead_letter,
                    },
                )
            )
        return messages
    if kind == "ExecutionFinished" and (
        event.status != "SUCCEEDED" or getattr(event, "abandoned", None)
    ):
        # Steps still running when it ended (a stop node, a failure elsewhere) are stopped.
        return [(CONTROL_TOPIC, execution_id, _cancel(execution_id, None, event.status))]
    return []


def _cancel(execution_id: str, task_id: str | None, reason: str) -> dict[str, Any]:
    return {"kind": "cancel", "execution_id": execution_id, "task_id": task_id, "reason": reason}
