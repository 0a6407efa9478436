"""Query side: read-model queries, each scoped to the caller's workspace. Never writes events."""

from query_side.errors import BadCursor, QueryError
from query_side.views import Page, get_workflow, history, list_workflows

__all__ = [
    "BadCursor",
    "Page",
    "QueryError",
    "get_workflow",
    "history",
    "list_workflows",
]
