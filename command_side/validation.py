"""Checks shared by the aggregates of every context."""

from __future__ import annotations

import json
import re
from typing import Any

from command_side.errors import ValidationFailed
from infra import jsontext

MAX_NAME = 200


#: Control characters other than tab and line breaks (NUL among them: PostgreSQL's text
#: cannot hold it), and surrogates, which are not text.
_NOT_IN_NAMES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def check_name(value: str, field: str = "name") -> str:
    """A name, trimmed: not empty, at most MAX_NAME characters, no control characters."""
    value = value.strip()
    if not value:
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(value) > MAX_NAME:
        raise ValidationFailed(f"{field} is longer than {MAX_NAME} characters", field=field)
    if _NOT_IN_NAMES.search(value):
        raise ValidationFailed(f"{field} must not contain control characters", field=field)
    return value


def check_text(value: str, field: str) -> str:
    """Free text (a description, a comment): whatever it says, as long as it is Unicode
    (a lone surrogate, which JSON can escape, is not, and no store could save it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(f"{field} is not valid Unicode text", field=field) from None
    return value


def json_size(value: Any, field: str) -> int:
    """The size in bytes of `value` as UTF-8 JSON; VALIDATION when it is not plain JSON
    (NaN, infinities, lone surrogates, nesting too deep, other types)."""
    if jsontext.too_deep(value):
        raise ValidationFailed(
            f"{field} must be plain JSON: nested deeper than {jsontext.MAX_DEPTH} levels",
            field=field,
        )
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError included
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValidationFailed(f"{field} must be plain JSON: {reason}", field=field) from None
