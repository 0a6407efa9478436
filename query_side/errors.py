"""The root error of the query side."""


class QueryError(Exception):
    code = "BAD_REQUEST"


class BadCursor(QueryError):
    """A pagination cursor that this service did not hand out."""

    code = "VALIDATION"
