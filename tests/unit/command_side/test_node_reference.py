"""The node type reference in docs/ is what the code validates against."""

from __future__ import annotations

from pathlib import Path

from command_side.workflow.node_reference import describe, reference
from command_side.workflow.node_types import NODE_TYPES

DOC = Path(__file__).resolve().parents[3] / "docs" / "node-types.md"


def test_the_docs_reference_is_the_one_the_code_writes() -> None:
    assert DOC.read_text() == reference(), (
        "docs/node-types.md is stale: `autoops node-types > docs/node-types.md`"
    )


def test_every_type_and_key_is_in_the_reference() -> None:
    text = reference()
    for name, node_type in NODE_TYPES.items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for key in node_type.properties:
            assert f"| `{key}` |" in section, (name, key)


def test_schemas_read_as_words() -> None:
    assert describe({"type": "integer", "minimum": 1, "maximum": 10_000}) == (
        "integer (≥ 1; ≤ 10 000)"
    )
    assert describe({"enum": ["a", 1]}) == 'one of `"a"`, `1`'
    assert describe({"anyOf": [{"type": "string"}, {"type": "number"}]}) == "string or number"
    assert describe({"type": "array", "items": {"type": "string"}}) == "array (of string)"
