"""The node type reference (`docs/node-types.md`, `autoops node-types`), written from the
JSON Schemas the editor validates against, so the two cannot disagree."""

from __future__ import annotations

import json
from typing import Any

from command_side.workflow.node_types import _COMMON, NODE_TYPES, NodeType

HEADER = """# Node types

Every node type, its runner pool and the keys of its config, as the editor checks them
(`nodeTypes { type configSchema }` in GraphQL gives the same as JSON Schema). Written by
`autoops node-types`; a test keeps this file equal to it. Strings marked *template* may use
`{{ … }}` over `inputs`, `steps`, `vars` and `execution` ([execution.md](execution.md)).

Every type also takes these keys:
"""


def describe(schema: dict[str, Any]) -> str:
    """One JSON Schema in a few words."""
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    for alternatives in ("anyOf", "oneOf"):
        if alternatives in schema:
            return " or ".join(describe(s) for s in schema[alternatives])
    kind = schema.get("type", "any")
    words = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if words == "string" and schema.get("description", "").startswith("a template"):
        words = "*template*"
    limits = []
    for key, word in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    ):
        if key in schema:
            limits.append(f"{word} {schema[key]:,}".replace(",", " "))
    if "pattern" in schema:
        limits.append(f"matching `{schema['pattern']}`")
    if kind == "array" and isinstance(schema.get("items"), dict):
        limits.append(f"of {describe(schema['items'])}")
    if kind == "object" and schema.get("properties"):
        limits.append("keys " + ", ".join(f"`{k}`" for k in schema["properties"]))
    return words + (f" ({'; '.join(limits)})" if limits else "")


def _section(node_type: NodeType) -> str:
    lines = [
        f"## `{node_type.type}`",
        "",
        f"{node_type.description} Category `{node_type.category}`, pool `{node_type.pool}`.",
        "",
    ]
    own = {k: v for k, v in node_type.properties.items() if k not in _COMMON}
    if not own:
        return "\n".join([*lines, "No keys of its own.", ""])
    return "\n".join([*lines, *_table(own, node_type.required), ""])


def _table(properties: dict[str, Any], required: tuple[str, ...] = ()) -> list[str]:
    lines = ["| key | required | value |", "| --- | --- | --- |"]
    for key, schema in properties.items():
        note = schema.get("description", "")
        value = describe(schema)
        if note and not note.startswith("a template"):
            value += f": {note}"
        cell = value.replace("|", "\\|")
        lines.append(f"| `{key}` | {'yes' if key in required else ''} | {cell} |")
    return lines


def reference() -> str:
    """The whole reference, as markdown."""
    sections = [_section(NODE_TYPES[name]) for name in sorted(NODE_TYPES)]
    return "\n".join([HEADER, *_table(_COMMON), "", *sections])
