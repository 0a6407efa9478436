"""Database values as JSON data."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from runners.nodes.jsonable import redact_json, to_jsonable


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12"), 12),
        (Decimal("12.50"), 12.5),
        (Decimal("NaN"), "NaN"),
        (float("inf"), "inf"),
        (dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC), "2024-05-01T12:30:00+00:00"),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (dt.time(8, 15), "08:15:00"),
        (dt.timedelta(minutes=2), 120.0),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x00\xff", "AP8="),
        (memoryview(b"hi"), "aGk="),
        ({"a": [Decimal("1.5"), None]}, {"a": [1.5, None]}),
        ((1, "x"), [1, "x"]),
        (True, True),
    ],
)
def test_database_values_become_json_data(value: Any, expected: Any) -> None:
    converted = to_jsonable(value)
    assert converted == expected
    json.dumps(converted, allow_nan=False)


def test_unknown_values_become_their_text() -> None:
    class Point:
        def __str__(self) -> str:
            return "(1,2)"

    assert to_jsonable(Point()) == "(1,2)"


def test_redact_json_leaves_values_alone_without_secrets() -> None:
    value = {"a": ["b"]}
    assert redact_json(value, []) is value
    assert redact_json({"a": ("xsecretx", 1)}, ["secret"]) == {"a": ["x***x", 1]}
