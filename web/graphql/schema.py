"""The GraphQL schema."""

from __future__ import annotations

import strawberry
from strawberry.extensions import MaxTokensLimiter, QueryDepthLimiter

from web.graphql.errors import MaskInternalErrors
from web.graphql.mutation import Mutation
from web.graphql.query import Query
from web.graphql.subscription import Subscription


def build_schema() -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[MaskInternalErrors, QueryDepthLimiter(max_depth=10), MaxTokensLimiter(5000)],
    )
