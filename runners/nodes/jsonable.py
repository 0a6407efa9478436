"""Values made JSON: database values to JSON data, and secrets taken out of any JSON value."""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from infra.secrets import redact


def to_jsonable(value: Any) -> Any:
    """JSON data for a value a database driver returns.

    Integral decimals become ints, other finite decimals floats (NaN and infinities text),
    date/times ISO 8601 text, intervals seconds, UUIDs text, bytes base64 text; anything else
    unknown becomes its text form.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return str(value)


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every secret removed from its strings (keys included)."""
    secrets = list(secrets)
    if not secrets:
        return value
    return _redacted(value, secrets)


def _redacted(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {redact(str(k), secrets): _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    return value
