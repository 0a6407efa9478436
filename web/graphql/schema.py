"""The GraphQL schema."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.tools import merge_types

from web.graphql.account import AccountMutation
from web.graphql.account_query import AccountQuery
from web.graphql.errors import MaskInternalErrors, label_client_errors
from web.graphql.mutation import WorkflowMutation
from web.graphql.query import WorkflowQuery
from web.graphql.subscription import Subscription

Query = merge_types("Query", (AccountQuery, WorkflowQuery))
Mutation = merge_types("Mutation", (AccountMutation, WorkflowMutation))


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Client mistakes are answered, not logged as server errors; internal ones are
        # logged by MaskInternalErrors.
        label_client_errors(errors)


def build_schema() -> strawberry.Schema:
    extensions: list[Any] = [
        MaxTokensLimiter(5000),
        ParserCache(maxsize=1000),
        QueryDepthLimiter(max_depth=10),
        ValidationCache(maxsize=1000),
        # Last, so it sees the errors of every step before it (parsing included).
        MaskInternalErrors,
    ]
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)
