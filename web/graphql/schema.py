"""The GraphQL schema."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.tools import merge_types

from infra.settings import Settings
from web.graphql.account import AccountMutation
from web.graphql.account_query import AccountQuery
from web.graphql.comments import CommentMutation, CommentQuery
from web.graphql.cost import CostLimiter
from web.graphql.errors import MaskInternalErrors, label_client_errors
from web.graphql.execution_mutation import ExecutionMutation
from web.graphql.execution_query import ExecutionQuery
from web.graphql.execution_subscription import ExecutionSubscription
from web.graphql.mutation import WorkflowMutation
from web.graphql.node_types import NodeTypeQuery
from web.graphql.presence import PresenceMutation, PresenceSubscription
from web.graphql.query import WorkflowQuery
from web.graphql.subscription import Subscription as WorkflowSubscription

Query = merge_types(
    "Query", (AccountQuery, WorkflowQuery, CommentQuery, NodeTypeQuery, ExecutionQuery)
)
Mutation = merge_types(
    "Mutation",
    (AccountMutation, WorkflowMutation, CommentMutation, PresenceMutation, ExecutionMutation),
)
Subscription = merge_types(
    "Subscription", (WorkflowSubscription, ExecutionSubscription, PresenceSubscription)
)


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Client mistakes are answered, not logged as server errors; internal ones are
        # logged by MaskInternalErrors.
        label_client_errors(errors)


MAX_ALIASES = 30


def build_schema(settings: Settings) -> strawberry.Schema:
    """The schema with the limits of `settings`: depth, cost, aliases and introspection."""
    # Extensions are factories (a fresh instance per request, as strawberry asks), but the
    # validation rule classes are built once: ValidationCache keys its entries on them.
    rules: list[type[ASTValidationRule]] = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    if not settings.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list[Any] = [
        partial(MaxTokensLimiter, 5000),
        partial(ParserCache, maxsize=1000),
        partial(AddValidationRules, rules),
        partial(ValidationCache, maxsize=1000),
        # After ValidationCache: it costs only documents that passed validation.
        partial(CostLimiter, settings.graphql_max_cost),
        # Last, so it sees the errors of every step before it (parsing included).
        MaskInternalErrors,
    ]
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)
