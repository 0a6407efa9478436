"""Authentication and authorization at the api's edge: tokens, revocations, throttles and
the permission table."""

from web.auth.permissions import PERMISSIONS, SECURED, Permitted, authenticate
from web.auth.revocation import Revocations
from web.auth.throttle import LoginLimits, LoginThrottle, RateLimited, RequestRate
from web.auth.tokens import InvalidToken, Principal, Tokens

__all__ = [
    "PERMISSIONS",
    "SECURED",
    "InvalidToken",
    "LoginLimits",
    "LoginThrottle",
    "Permitted",
    "Principal",
    "RateLimited",
    "RequestRate",
    "Revocations",
    "Tokens",
    "authenticate",
]
