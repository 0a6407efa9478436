"""What reaches runners besides the public events: tasks (sent by the orchestrator right
after the commit that stored them), cancels and dead letters (routed by the relay).

Each comes from a committed execution event, so a task never reaches a runner for a decision
that was not stored. Tasks go at most once: one that never arrives is sent again by the
orchestrator when no runner reports taking it. Cancels, releases and dead letters go at least
once (the relay moves their high-water mark after the broker acknowledged them; it is kept
apart from the position, so they are not sent again when a broker that lost its data gets
every event again). A repeat is harmless: a cancel or release of what has stopped does
nothing, and dead letters carry their task id.
"""

from __future__ import annotations

from typing import Any

TASKS_TOPIC = "autoops.runner.tasks.{pool}"
CONTROL_TOPIC = "autoops.runner.control"
DLQ_TOPIC = "autoops.runner.dlq"
#: Failures after which the attempt's runner should stop working on it.
ABANDONED = frozenset({"StepTimeout", "HeartbeatTimeout"})

Message = tuple[str, str, dict[str, Any]]  # topic, key, value


def task_message(event: Any) -> Message | None:
    """The task a committed `StepScheduled` / `StepDispatched` carries, if any. The
    orchestrator sends it right after the commit that stored it (one hop fewer than through
    the relay); a kill in between loses it, and the orchestrator sends the step again when
    no runner reports taking it (`AUTOOPS_STEP_QUEUE_TIMEOUT_S`)."""
    if type(event).__name__ not in ("StepScheduled", "StepDispatched"):
        return None
    task = getattr(event, "task", None)
    if not task:
        return None
    pool = task.get("pool") or "default"
    return TASKS_TOPIC.format(pool=pool), str(event.originator_id), task


def runner_messages(event: Any) -> list[Message]:
    """What the relay sends to runners for a committed event: cancels and dead letters."""
    kind = type(event).__name__
    execution_id = str(event.originator_id)
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
    if kind == "ExecutionFinished":
        messages = []
        if event.status != "SUCCEEDED" or getattr(event, "abandoned", None):
            # Steps still running when it ended (a stop node, a failure elsewhere) are stopped.
            messages.append(
                (CONTROL_TOPIC, execution_id, _cancel(execution_id, None, event.status))
            )
        pools = getattr(event, "sessions", None)
        if pools:  # its browser (desktop) session ends with it
            release = {"kind": "release", "execution_id": execution_id, "pools": list(pools)}
            messages.append((CONTROL_TOPIC, execution_id, release))
        return messages
    return []


def _cancel(execution_id: str, task_id: str | None, reason: str) -> dict[str, Any]:
    return {"kind": "cancel", "execution_id": execution_id, "task_id": task_id, "reason": reason}
