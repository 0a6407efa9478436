"""Running one step the way a runner does: a task message, a StepContext, `run_step`."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore, FileArtifactStore
from infra.settings import Settings
from runners.nodes import StepContext, StepError, run_step

WORKSPACE = "6f1f3c9e-2a0b-4c5d-9e8f-0a1b2c3d4e5f"


def make_task(node_type: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    execution_id = str(uuid.uuid4())
    return {
        "task_id": f"{execution_id}:node:1",
        "execution_id": execution_id,
        "workspace_id": WORKSPACE,
        "workflow_id": str(uuid.uuid4()),
        "node_id": "node",
        "node_type": node_type,
        "attempt": 1,
        "max_attempts": 3,
        "config": config,
        "credentials": {},
        "timeout_s": 30.0,
        "deadline": time.time() + 60,
        "heartbeat_s": 2.0,
        "dispatched_at": time.time(),
        **fields,
    }


@dataclass
class StepRunner:
    """Runs steps against one artifact store and one set of settings."""

    artifacts: ArtifactStore
    settings: Settings
    cancelled: threading.Event = field(default_factory=threading.Event)
    sessions: Any = None  # the pool's sessions (browser)

    @classmethod
    def at(cls, root: Path, **settings: Any) -> StepRunner:
        return cls(
            FileArtifactStore(root / "artifacts"), Settings(data_dir=root / "data", **settings)
        )

    def context(
        self, task: dict[str, Any], secrets: dict[str, dict[str, Any]] | None = None
    ) -> StepContext:
        return StepContext(
            task, secrets or {}, self.artifacts, self.settings, self.cancelled, self.sessions
        )

    def run(
        self,
        node_type: str,
        config: dict[str, Any],
        secrets: dict[str, dict[str, Any]] | None = None,
        **task_fields: Any,
    ) -> Any:
        task = make_task(node_type, config, **task_fields)
        return run_step(task, self.context(task, secrets))

    def fails(
        self,
        node_type: str,
        config: dict[str, Any],
        secrets: dict[str, dict[str, Any]] | None = None,
        **task_fields: Any,
    ) -> StepError:
        """The StepError the step raises (AssertionError if it succeeds)."""
        try:
            output = self.run(node_type, config, secrets, **task_fields)
        except StepError as exc:
            return exc
        raise AssertionError(f"{node_type} succeeded with {output!r}")

    def with_settings(self, **changes: Any) -> StepRunner:
        settings = dataclasses.replace(self.settings, **changes)
        return StepRunner(self.artifacts, settings, self.cancelled, self.sessions)

    def cancel_when(self, happened: threading.Event) -> threading.Thread:
        """Set `cancelled` as soon as `happened` is (in a thread; the step runs meanwhile)."""

        def cancel() -> None:
            if happened.wait(30):
                self.cancelled.set()

        thread = threading.Thread(target=cancel, daemon=True)
        thread.start()
        return thread
