"""GraphQL types of executions, their steps, live updates and credentials."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from infra.artifacts import REF_KEY, is_ref
from web.graphql.types import PageInfo


@strawberry.enum
class ExecutionStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


@strawberry.enum(
    description="SCHEDULED: waiting for its time (a retry's backoff); RUNNING: its task left "
    "for a runner, or the orchestrator began it; SKIPPED and REUSED steps ran no attempt; "
    "CANCELLED: still scheduled or running when the execution ended (cancelled, timed out, "
    "failed elsewhere, or a stop node), and its runner was told to stop."
)
class StepStatus(Enum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    REUSED = "reused"
    CANCELLED = "cancelled"


@strawberry.type(
    description="A file an execution produced or uses (a download, a screenshot, a "
    "large output, an uploaded template image), stored by content."
)
class Artifact:
    sha256: str
    size: int
    media_type: str

    @strawberry.field(description="GET with `Authorization: Bearer <token>` (same origin).")
    def download_url(self) -> str:
        return f"/artifacts/{self.sha256}"

    @classmethod
    def from_ref(cls, ref: dict[str, Any]) -> Artifact:
        inner = ref[REF_KEY]
        return cls(sha256=inner["sha256"], size=inner["size"], media_type=inner["media_type"])


def artifacts_in(*values: Any) -> list[Artifact]:
    """Every artifact reference inside these JSON values, once each, in order."""
    found: dict[str, Artifact] = {}

    def walk(value: Any) -> None:
        if is_ref(value):
            found.setdefault(value[REF_KEY]["sha256"], Artifact.from_ref(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for value in values:
        walk(value)
    return list(found.values())


@strawberry.type
class StepError:
    type: str
    message: str
    retryable: bool
    details: JSON | None = strawberry.field(
        default=None,
        description="What the failure left to look at, e.g. a browser step's `url` and "
        "`screenshot` (an artifact reference: GET /artifacts/{sha256}).",
    )


@strawberry.type
class ExecutionStep:
    """One attempt of a step (attempt 0: a skipped or reused step)."""

    node_id: strawberry.ID
    node_type: str
    attempt: int
    status: StepStatus
    input: JSON | None
    output: JSON | None
    branch: str | None
    error: StepError | None
    scheduled_at: datetime
    started_at: datetime | None = strawberry.field(description="As the runner reported it.")
    finished_at: datetime | None
    runner_id: str | None

    @strawberry.field(
        description="Artifacts the step's output and error refer to (screenshots, downloads, "
        "large outputs), with their download URLs."
    )
    def artifacts(self) -> list[Artifact]:
        return artifacts_in(self.output, self.error.details if self.error else None)

    @strawberry.field(description="From the runner's start to the step's end.")
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds() * 1000)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ExecutionStep:
        error = row["error"]
        return cls(
            node_id=strawberry.ID(row["node_id"]),
            node_type=row["node_type"],
            attempt=row["attempt"],
            status=StepStatus(row["status"]),
            input=row["input"],
            output=row["output"],
            branch=row["branch"],
            error=StepError(
                type=str(error.get("type") or ""),
                message=str(error.get("message") or ""),
                retryable=bool(error.get("retryable")),
                details=error.get("details"),
            )
            if error
            else None,
            scheduled_at=row["scheduled_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            runner_id=row["runner_id"],
        )


def _id(value: Any) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(str(value))


@strawberry.type
class Execution:
    id: strawberry.ID
    workflow_id: strawberry.ID
    workflow_version: int
    status: ExecutionStatus
    trigger: JSON
    inputs: JSON
    output: JSON | None
    error: str | None
    created_at: datetime = strawberry.field(description="When it was queued.")
    started_at: datetime | None = strawberry.field(description="When it was admitted to run.")
    finished_at: datetime | None
    parent_id: strawberry.ID | None = strawberry.field(
        description="The execution whose loop or subworkflow step started this one."
    )
    retry_of: strawberry.ID | None
    steps: list[ExecutionStep] = strawberry.field(
        description="Attempts by scheduled time, node id and attempt."
    )

    @classmethod
    def from_row(cls, row: dict[str, Any], steps: list[dict[str, Any]]) -> Execution:
        return cls(
            id=strawberry.ID(str(row["id"])),
            workflow_id=strawberry.ID(str(row["workflow_id"])),
            workflow_version=row["workflow_version"],
            status=ExecutionStatus(row["status"]),
            trigger=row["trigger"],
            inputs=row["inputs"],
            output=row["output"],
            error=row["error"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            parent_id=_id(row["parent_id"]),
            retry_of=_id(row["retry_of"]),
            steps=[ExecutionStep.from_row(s) for s in steps],
        )


@strawberry.type
class ExecutionConnection:
    nodes: list[Execution]
    page_info: PageInfo


#: The execution status each execution-level event sets.
_STATUS_SET_BY = {"ExecutionStarted": "QUEUED", "ExecutionAdmitted": "RUNNING"}


@strawberry.type
class ExecutionUpdate:
    """One event of an execution, as it happened (its public data only)."""

    execution_id: strawberry.ID
    type: str
    version: int
    status: ExecutionStatus | None = strawberry.field(
        description="The execution's new status, on the events that change it (started, "
        "admitted, finished); null on step events."
    )
    node_id: strawberry.ID | None
    attempt: int | None
    occurred_at: datetime
    data: JSON

    @classmethod
    def from_row(cls, execution_id: str, row: dict[str, Any]) -> ExecutionUpdate:
        data = row["payload"]
        status = _STATUS_SET_BY.get(row["type"])
        if row["type"] == "ExecutionFinished":
            status = data.get("status")
        known = status in ExecutionStatus._value2member_map_
        attempt = data.get("attempt")
        return cls(
            execution_id=strawberry.ID(execution_id),
            type=row["type"],
            version=row["version"],
            status=ExecutionStatus(status) if known else None,
            node_id=_id(data.get("node_id")),
            attempt=attempt if isinstance(attempt, int) else None,
            occurred_at=row["occurred_at"],
            data=data,
        )


@strawberry.type
class Credential:
    """A workspace credential as steps name it; its secret is never readable."""

    name: str
    kind: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Credential:
        return cls(name=row["name"], kind=row["kind"], created_at=row["created_at"])


@strawberry.type
class Variable:
    """A workspace variable: every execution started after it was set reads it as `vars`."""

    name: str
    value: JSON
    updated_at: datetime
    updated_by: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Variable:
        return cls(
            name=row["name"],
            value=row["value"],
            updated_at=row["updated_at"],
            updated_by=row["updated_by"],
        )
