"""What an executor gets besides its config: the task, its decrypted credentials, the artifact
store, the settings and the event that says stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from infra.artifacts import ArtifactStore
from infra.settings import Settings
from runners.nodes.errors import StepError

#: The field a step types from a credential of each kind, unless it names another.
SECRET_FIELDS = {
    "http_basic": "password",
    "http_bearer": "token",
    "http_header": "value",
    "openai": "api_key",
    "postgres": "url",
}


@dataclass
class StepContext:
    task: dict[str, Any]
    """The task message (docs/execution.md)."""
    secrets: dict[str, dict[str, Any]]
    """Decrypted credentials by name, each `{"kind": ..., **fields}`."""
    artifacts: ArtifactStore
    settings: Settings
    cancelled: threading.Event
    """Set when the step must stop (cancel, timeout, shutdown)."""
    sessions: Any = None
    """What the runner's pool keeps between an execution's steps (the browser pool's
    `BrowserSessions`); None on pools that keep nothing."""

    @property
    def workspace(self) -> str:
        return str(self.task["workspace_id"])

    def credential(self, name: Any, *kinds: str) -> dict[str, Any]:
        """The decrypted credential `name`, which must be of one of `kinds`."""
        secret = self.secrets.get(name) if isinstance(name, str) else None
        if secret is None:
            raise StepError("CredentialError", f"credential {name!r} is not available")
        if secret.get("kind") not in kinds:
            raise StepError(
                "CredentialError",
                f"credential {name!r} is a {secret.get('kind')} credential; "
                f"this step needs {' or '.join(kinds)}",
            )
        return secret

    def secret_text(self, config: dict[str, Any]) -> str | None:
        """The text a step types from a credential (`credential`, and `field`: by default the
        kind's secret: password, token, value, api_key, url); None when it names none."""
        name = config.get("credential")
        if name is None:
            return None
        secret = self.credential(name, *SECRET_FIELDS)
        field = config.get("field") or SECRET_FIELDS[str(secret["kind"])]
        value = secret.get(field) if isinstance(field, str) else None
        if not isinstance(value, str):
            raise StepError("CredentialError", f"credential {name!r} has no text field {field!r}")
        return value

    def time_left(self, config: dict[str, Any]) -> float:
        """Seconds the step may still take: its timeout, cut short by the task's deadline;
        StepTimeout when none is left."""
        limit = config.get("timeout_s") or self.task.get("timeout_s")
        seconds = float(limit) if limit else self.settings.step_timeout_s
        deadline = self.task.get("deadline")
        if deadline is not None:
            seconds = min(seconds, float(deadline) - time.time())
        if seconds <= 0:
            raise StepError("StepTimeout", "the step's deadline has passed", retryable=True)
        return seconds
