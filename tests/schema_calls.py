"""Operations generated from the schema: one call per root field, with arguments filled in, so
tests cover every query, mutation and subscription, including ones added later."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
)

from infra.settings import load_settings
from web.graphql.schema import build_schema


@dataclass(frozen=True)
class Call:
    root: str  # Query, Mutation or Subscription
    field: str
    document: str

    @property
    def name(self) -> str:
        return f"{self.root}.{self.field}"


def root_fields() -> dict[str, list[str]]:
    schema = build_schema(load_settings({}))._schema
    roots = {
        "Query": schema.query_type,
        "Mutation": schema.mutation_type,
        "Subscription": schema.subscription_type,
    }
    return {name: sorted(t.fields) for name, t in roots.items() if t is not None}


def calls(values: Mapping[str, object] | None = None) -> list[Call]:
    """A call of every root field. Arguments named in `values` (by argument or input field
    name, e.g. `workflowId`) take that value; the rest get a harmless well-typed dummy."""
    schema = build_schema(load_settings({}))._schema
    out: list[Call] = []
    for root, kind in (
        ("Query", schema.query_type),
        ("Mutation", schema.mutation_type),
        ("Subscription", schema.subscription_type),
    ):
        if kind is None:
            continue
        keyword = {"Query": "query", "Mutation": "mutation", "Subscription": "subscription"}[root]
        for name, field in sorted(kind.fields.items()):
            args = ", ".join(
                f"{arg}: {_literal(arg, a.type, values or {})}"
                for arg, a in field.args.items()
                if isinstance(a.type, GraphQLNonNull) or arg in (values or {})
            )
            selection = _selection(field.type)
            call = f"{name}({args})" if args else name
            out.append(Call(root, name, f"{keyword} {{ {call}{selection} }}"))
    return out


def _selection(output: object) -> str:
    named = get_named_type(output)  # type: ignore[arg-type]
    if not isinstance(named, GraphQLObjectType):
        return ""
    scalars = [
        n
        for n, f in named.fields.items()
        if isinstance(get_named_type(f.type), (GraphQLScalarType, GraphQLEnumType)) and not f.args
    ]
    return " { __typename " + " ".join(scalars) + " }"


def _literal(name: str, kind: GraphQLInputType, values: Mapping[str, object]) -> str:
    if name in values:
        value = values[name]
        return value if isinstance(value, str) and value.startswith("$") else _quote(value)
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    if isinstance(kind, GraphQLList):
        return f"[{_literal(name, kind.of_type, values)}]"
    if isinstance(kind, GraphQLInputObjectType):
        fields = ", ".join(
            f"{n}: {_literal(n, f.type, values)}"
            for n, f in kind.fields.items()
            if isinstance(f.type, GraphQLNonNull) or n in values
        )
        return "{" + fields + "}"
    if isinstance(kind, GraphQLEnumType):
        return sorted(kind.values)[-1]  # e.g. VIEWER: the least harmful role
    scalar = kind.name if isinstance(kind, GraphQLScalarType) else "String"
    return {
        "ID": _quote(str(uuid.uuid4())),
        "Int": "1",
        "Float": "1.5",
        "Boolean": "false",
        "JSON": "{}",
    }.get(scalar, _quote("x"))


def _quote(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
