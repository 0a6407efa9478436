"""JSON from outside (Kafka messages, webhook bodies, an API's answer) read into text every
store takes.

JSON may escape what UTF-8 cannot hold, a lone surrogate (`"\\ud800"`), which then fails the
event store's encoding at every save of the event that carries it; and it may nest deeper
than Python's recursion limit, which raises `RecursionError`, not `ValueError`. `loads`
turns the first into U+FFFD and the second into `ValueError`, so every consumer's handling
of malformed input covers both.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A `\u` escape of a surrogate in JSON text (paired ones become one character on parsing).
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPED_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
#: Surrogate code points in a `str`: always lone ones.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The deepest nesting data may have (inputs, configs, outputs): far past any real document,
#: and far short of what Python's recursion (every `json.dumps`, every walk) can take.
MAX_DEPTH = 100
#: Messages wrap such data in a few levels of their own.
_MESSAGE_DEPTH = MAX_DEPTH + 16


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and objects nest in `value` deeper than `limit` (looked at without
    recursion, so any depth can be asked about)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads(raw: bytes | str, *, allow_nan: bool = True) -> Any:
    """`json.loads`, with lone surrogates replaced by U+FFFD; ValueError (or
    UnicodeDecodeError, a ValueError) for anything that is not JSON, too deep included, and
    for `NaN` and `Infinity` unless `allow_nan` (Python writes them; JSON has no such thing,
    and a browser could not read them back)."""
    try:
        value = json.loads(raw, parse_constant=None if allow_nan else _no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if too_deep(value, _MESSAGE_DEPTH):
        raise ValueError(f"JSON nested deeper than {_MESSAGE_DEPTH} levels")
    escaped = (
        _ESCAPED_SURROGATE_BYTES.search(raw)
        if isinstance(raw, bytes)
        else _ESCAPED_SURROGATE.search(raw)
    )
    return replace_text(value, _SURROGATE) if escaped else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def replace_text(value: Any, pattern: re.Pattern[str]) -> Any:
    """`value` with what `pattern` matches, in every string and key, replaced by U+FFFD."""
    if isinstance(value, str):
        return pattern.sub("\ufffd", value)
    if isinstance(value, dict):
        return {replace_text(k, pattern): replace_text(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_text(v, pattern) for v in value]
    return value


__all__ = ["MAX_DEPTH", "loads", "replace_text", "too_deep"]
