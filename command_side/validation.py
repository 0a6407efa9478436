"""Checks shared by the aggregates of every context."""

from __future__ import annotations

from command_side.errors import ValidationFailed

MAX_NAME = 200


def check_name(value: str, field: str = "name") -> str:
    """A name, trimmed: not empty and at most MAX_NAME characters."""
    value = value.strip()
    if not value:
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(value) > MAX_NAME:
        raise ValidationFailed(f"{field} is longer than {MAX_NAME} characters", field=field)
    return value
