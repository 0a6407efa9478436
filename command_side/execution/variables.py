"""Workspace variables: named JSON values every execution of the workspace reads as `vars`.

Not secrets (those are credentials): values are plain in events, read models and GraphQL.
One aggregate per workspace holds them all, so a start reads them in one load; an execution
copies them into its `ExecutionStarted`, so a later change never alters one already started
and a replay sees what the run saw.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from command_side.errors import NotFound, ValidationFailed
from infra import jsontext

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VALUE_BYTES = 16_384
MAX_VARIABLES = 500
#: Every execution copies all of them: their total stays small.
MAX_TOTAL_BYTES = 262_144


def variables_id(workspace_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"autoops:variables:{workspace_id}")


def checked(name: str, value: Any) -> str:
    """The value as JSON text; VALIDATION when the name or the value will not do."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationFailed(
            "a variable name is a letter or _ then up to 63 letters, digits or _",
            field="name",
        )
    if jsontext.too_deep(value):
        raise ValidationFailed(
            f"the value nests deeper than {jsontext.MAX_DEPTH} levels", field="value"
        )
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"the value is not JSON: {exc}", field="value") from None
    if len(text.encode()) > MAX_VALUE_BYTES:
        raise ValidationFailed(
            f"the value is larger than {MAX_VALUE_BYTES} bytes as JSON", field="value"
        )
    return text


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Variables(Aggregate):
    @staticmethod
    def create_id(workspace_id: str, **_: Any) -> UUID:
        return variables_id(workspace_id)

    @event("VariablesCreated")
    def __init__(self, workspace_id: str, actor_id: str) -> None:
        self.workspace_id = workspace_id
        self.values: dict[str, Any] = {}

    def set(self, name: str, value: Any, actor_id: str) -> bool:
        """False when the variable holds that value already (nothing to record)."""
        text = checked(name, value)
        value = json.loads(text)  # a copy, as JSON has it
        if name in self.values and _canonical(self.values[name]) == _canonical(value):
            return False  # (by JSON text: in Python, True == 1 == 1.0)
        if name not in self.values and len(self.values) >= MAX_VARIABLES:
            raise ValidationFailed(
                f"a workspace has at most {MAX_VARIABLES} variables", field="name"
            )
        others = sum(len(_canonical(v).encode()) for n, v in self.values.items() if n != name)
        if others + len(text.encode()) > MAX_TOTAL_BYTES:
            raise ValidationFailed(
                f"a workspace's variables take at most {MAX_TOTAL_BYTES} bytes as JSON",
                field="value",
            )
        self._set(name, value, actor_id, self.workspace_id)
        return True

    @event("VariableSet")
    def _set(self, name: str, value: Any, actor_id: str, workspace_id: str) -> None:
        self.values[name] = value

    def delete(self, name: str, actor_id: str) -> None:
        if name not in self.values:
            raise NotFound(f"variable {name!r} does not exist")
        self._deleted(name, actor_id, self.workspace_id)

    @event("VariableDeleted")
    def _deleted(self, name: str, actor_id: str, workspace_id: str) -> None:
        del self.values[name]
