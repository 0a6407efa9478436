"""The root error of the command side and its typed subclasses; each names its API code."""

from __future__ import annotations


class CommandError(Exception):
    """A command was refused; nothing was appended."""

    code = "BAD_REQUEST"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(CommandError):
    """The workflow, node or edge named by the command does not exist."""

    code = "NOT_FOUND"


class ValidationFailed(CommandError):
    """The command's input breaks an invariant (empty name, self-loop, duplicate edge…)."""

    code = "VALIDATION"


class Conflict(CommandError):
    """Someone else changed what this command touches since the version it was based on."""

    code = "CONFLICT"

    def __init__(self, message: str, *, current_version: int, **details: object) -> None:
        super().__init__(message, current_version=current_version, **details)
        self.current_version = current_version


class Locked(CommandError):
    """Someone else holds the lock of the node the command edits; `holder` and `expires_at`
    (epoch seconds) say who and until when."""

    code = "LOCKED"

    def __init__(self, message: str, *, holder: str, expires_at: float, **details: object) -> None:
        super().__init__(message, holder=holder, expires_at=expires_at, **details)
        self.holder = holder
        self.expires_at = expires_at


class Unauthenticated(CommandError):
    """The credentials (password, code, refresh token) do not prove who the caller is."""

    code = "UNAUTHENTICATED"


class Forbidden(CommandError):
    """The caller is known but their role does not allow this."""

    code = "FORBIDDEN"
