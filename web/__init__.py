"""The api: Litestar with Strawberry GraphQL (queries, mutations, subscriptions), health,
metrics."""

from web.app import create_app

__all__ = ["create_app"]
