"""Depth, cost, alias and introspection limits refuse an operation in validation, before any
resolver runs: anonymous callers see VALIDATION for those, UNAUTHENTICATED otherwise."""

from __future__ import annotations

from typing import Any

import strawberry

from infra.settings import load_settings
from web.graphql.schema import build_schema


def schema(**env: str) -> strawberry.Schema:
    return build_schema(load_settings({f"AUTOOPS_{k.upper()}": v for k, v in env.items()}))


async def codes(
    schema: strawberry.Schema, query: str, variables: dict[str, Any] | None = None
) -> list[str]:
    result = await schema.execute(query, variables, context_value={})
    return [(e.extensions or {}).get("code", "") for e in result.errors or []]


PAGE = "query Page($n: Int) { workflows(first: $n) { nodes { id name description } } }"


async def test_a_query_within_the_cost_limit_passes_validation() -> None:
    assert await codes(schema(graphql_max_cost="401"), PAGE, {"n": 100}) == ["UNAUTHENTICATED"]


async def test_a_query_over_the_cost_limit_is_refused_naming_cost_and_limit() -> None:
    result = await schema(graphql_max_cost="400").execute(PAGE, {"n": 100}, context_value={})
    assert result.data is None
    assert result.errors is not None and len(result.errors) == 1
    error = result.errors[0]
    assert error.extensions == {"code": "VALIDATION", "cost": 401, "maxCost": 400}
    assert "401" in error.message and "400" in error.message


async def test_the_cost_follows_the_variables_of_each_request_of_one_document() -> None:
    limited = schema(graphql_max_cost="1000")
    assert await codes(limited, PAGE, {"n": 10}) == ["UNAUTHENTICATED"]
    assert await codes(limited, PAGE, {"n": 10_000}) == ["VALIDATION"]
    assert await codes(limited, PAGE, {"n": 10}) == ["UNAUTHENTICATED"]


async def test_the_default_cost_limit_refuses_huge_pages() -> None:
    assert await codes(schema(), PAGE, {"n": 1_000_000}) == ["VALIDATION"]


async def test_a_query_deeper_than_the_limit_is_refused() -> None:
    deep = "{ workflows { nodes { nodes { id } } } }"
    assert await codes(schema(graphql_max_depth="3"), deep) == ["UNAUTHENTICATED"]
    assert await codes(schema(graphql_max_depth="2"), deep) == ["VALIDATION"]


async def test_more_than_thirty_aliases_are_refused() -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(31))
    assert await codes(schema(), f"{{ {aliases} }}") == ["VALIDATION"]


async def test_introspection_is_answered_unless_turned_off() -> None:
    query = "{ __schema { queryType { name } } }"
    answered = await schema().execute(query, context_value={})
    assert answered.errors is None
    assert answered.data == {"__schema": {"queryType": {"name": "Query"}}}
    refused = await codes(schema(introspection="false"), query)
    assert refused and set(refused) == {"VALIDATION"}
