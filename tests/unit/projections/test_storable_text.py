"""Text PostgreSQL cannot store (NUL, lone surrogates) reaching the projector or the event
store: read as U+FFFD, never a batch that fails for good (the projector exits on a failed
batch and would read the same one again after every restart)."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_side.errors import ValidationFailed
from command_side.validation import check_name, json_size
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from infra import jsontext
from projections.applier import storable_json

#: Any code point, NUL and lone surrogates included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def unstorable(value: Any) -> bool:
    text = json.dumps(value, ensure_ascii=False)
    return "\\u0000" in json.dumps(value) or any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def walk_text(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *walk_text(v))]
    if isinstance(value, list):
        return [t for v in value for t in walk_text(v)]
    return []


@given(JSON)
def test_what_the_projector_sends_postgresql_is_utf8_json_without_nul(value: Any) -> None:
    encoded = storable_json(value)
    back = json.loads(encoded.decode("utf-8"))  # strict UTF-8: no surrogate got through
    assert all("\x00" not in t for t in walk_text(back))
    if not unstorable(value):
        assert back == value  # the usual case: untouched


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": "x\x00y"}, {"a": "x\ufffdy"}),
        ({"a": "\\u0000"}, {"a": "\\u0000"}),  # a backslash and "u0000" are only text
        ({"a": "\\\x00"}, {"a": "\\\ufffd"}),
        ({"a\x00": ["\ud800z"]}, {"a\ufffd": ["\ufffdz"]}),
    ],
)
def test_nul_and_lone_surrogates_become_the_replacement_character(
    value: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert json.loads(storable_json(value)) == expected


def test_json_from_outside_is_read_without_lone_surrogates_and_too_deep_is_malformed() -> None:
    assert jsontext.loads(b'{"a": "\\ud800x", "b": "\\ud83d\\ude00"}') == {
        "a": "\ufffdx",
        "b": "\U0001f600",  # a pair is one character
    }
    assert jsontext.loads('{"k\\uDC00": 1}') == {"k\ufffd": 1}
    with pytest.raises(ValueError, match="nested too deeply"):
        jsontext.loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError):
        jsontext.loads(b"\xff")


@given(JSON)
def test_json_from_outside_reads_as_the_standard_parser_does_when_it_is_valid_text(
    value: Any,
) -> None:
    raw = json.dumps(value)
    if not any(0xD800 <= ord(c) <= 0xDFFF for t in walk_text(value) for c in t):
        assert jsontext.loads(raw) == json.loads(raw) == value


@pytest.mark.parametrize("name", ["Ann\x00ie", "form\x0cfeed", "bell\x07", "lone \ud800"])
def test_names_refuse_control_characters(name: str) -> None:
    with pytest.raises(ValidationFailed, match="control characters"):
        check_name(name)


def test_node_ids_refuse_a_trailing_newline() -> None:
    meta = Meta(actor_id="u1", workspace_id="ws1", client_op_id=None)
    workflow = Workflow.create(uuid4(), "w", "", meta)
    with pytest.raises(ValidationFailed):
        workflow.add_node("data.transform", "t", {}, 0, 0, meta, node_id="node1\n")


def nested(depth: int, leaf: Any = "x") -> Any:
    """`depth` lists, one in the other."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_depth_is_bounded_everywhere_data_comes_in_and_measured_without_recursion() -> None:
    """Deeper than Python's recursion, every walk (json.dumps, the relay's, the projector's)
    would fail on the event for good; 100 levels is far past any real document."""
    assert not jsontext.too_deep(nested(100)) and jsontext.too_deep(nested(101))
    assert jsontext.too_deep(nested(200_000))  # no RecursionError asking
    with pytest.raises(ValueError, match="deeper"):  # a surrogate to clean, too
        jsontext.loads(b"[" * 800 + b'"\\ud800"' + b"]" * 800)
    with pytest.raises(ValidationFailed, match="deeper than 100"):
        json_size({"a": nested(100)}, "inputs")
    assert json_size({"a": nested(99)}, "inputs") > 0
