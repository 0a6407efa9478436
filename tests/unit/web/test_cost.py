from __future__ import annotations

from typing import Any

import graphql

from web.graphql.cost import estimate_cost

SDL = """
type Query { teams(first: Int = 20): [Team!]! team: Team }
type Team { name: String members(first: Int): [User!]! tags: [String!]! }
type User { name: String email: String }
"""
SCHEMA = graphql.build_schema(SDL)


def cost(query: str, variables: dict[str, Any] | None = None, name: str | None = None) -> int:
    return estimate_cost(SCHEMA, graphql.parse(query), variables, name)


def test_each_field_counts_one_and_lists_without_first_count_once() -> None:
    assert cost("{ team { name tags } }") == 3


def test_selections_of_a_paginated_field_count_once_per_item_of_the_page() -> None:
    assert cost("{ teams(first: 10) { name } }") == 1 + 10


def test_enclosing_page_sizes_multiply() -> None:
    assert cost("{ teams(first: 10) { members(first: 5) { name email } } }") == 1 + 10 * (1 + 5 * 2)


def test_an_absent_first_takes_the_argument_default_else_fifty() -> None:
    assert cost("{ teams { name } }") == 1 + 20
    assert cost("{ team { members { name } } }") == 1 + 1 + 50


def test_first_given_by_a_variable_or_its_default() -> None:
    query = "query Q($n: Int = 3) { teams(first: $n) { name } }"
    assert cost(query, {"n": 400}) == 1 + 400
    assert cost(query) == 1 + 3
    assert cost("query Q($n: Int) { teams(first: $n) { name } }", {"n": None}) == 1 + 20


def test_fragments_and_inline_fragments_count_like_their_fields() -> None:
    query = """
        { teams(first: 10) { ...team ... on Team { tags } } }
        fragment team on Team { name members(first: 2) { name } }
    """
    assert cost(query) == 1 + 10 * (1 + 1 + 2 * 1 + 1)


def test_a_fragment_spread_many_times_is_costed_once_per_spread() -> None:
    spreads = " ".join(f"t{i}: team {{ ...f }}" for i in range(20))
    query = f"{{ {spreads} }} fragment f on Team {{ members(first: 100) {{ name }} }}"
    assert cost(query) == 20 * (1 + 1 + 100)


def test_aliases_of_one_paginated_field_each_count() -> None:
    assert cost("{ a: teams(first: 5) { name } b: teams(first: 7) { name } }") == 6 + 8


def test_the_named_operation_counts_and_otherwise_the_costliest() -> None:
    query = "query A { team { name } } query B { teams(first: 100) { name } }"
    assert cost(query, name="A") == 2
    assert cost(query) == 101


def test_a_negative_page_size_counts_as_an_empty_page() -> None:
    assert cost("{ teams(first: -5) { name } }") == 1
