"""The one error a step executor raises: what the result message reports as `error`."""

from __future__ import annotations

from typing import Any


class StepError(Exception):
    """A step that failed: `type` names the failure (`HttpStatusError`, `SqlError`, ...),
    `retryable` says whether another attempt may succeed, `details` (JSON) what the failure
    left to look at (a browser step's page URL and screenshot)."""

    def __init__(
        self,
        type: str,
        message: str,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        """The `error` of a result message."""
        error = {"type": self.type, "message": self.message, "retryable": self.retryable}
        return error | ({"details": self.details} if self.details else {})

    def __repr__(self) -> str:
        return f"StepError({self.type!r}, {self.message!r}, retryable={self.retryable})"
