"""Access tokens (JWT via pyjwt): minted from a sign-in grant, verified on every call.

Decoding accepts the one configured algorithm only (no `none`, no algorithm confusion) and
requires issuer, audience, expiry, issue time, not-before, subject, workspace, role and ids.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass

import jwt

from infra.keys import SigningKeys

REQUIRED = ["iss", "aud", "exp", "iat", "nbf", "jti", "sub", "wid", "role", "sid"]
LEEWAY_S = 5
# Verified tokens remembered per process: a client sends the same token on every call until it
# refreshes, and decoding plus the signature check was ~8 % of the api's CPU under load.
VERIFIED_CACHE = 4096


class InvalidToken(Exception):
    """The access token is missing, malformed, forged, expired or not for us."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, in which workspace, with which role, since when."""

    user_id: str
    workspace_id: str
    role: str
    session_id: str
    issued_ms: int
    expires_at: float


class Tokens:
    def __init__(self, keys: SigningKeys, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._verified = functools.lru_cache(maxsize=VERIFIED_CACHE)(self._verify)

    def issue(self, user_id: str, workspace_id: str, role: str, session_id: str) -> str:
        now_ms = time.time_ns() // 1_000_000
        now = now_ms // 1000
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
            "sub": user_id,
            "wid": workspace_id,
            "role": role,
            "sid": session_id,
            "ims": now_ms,
        }
        return jwt.encode(claims, self._keys.signing_key, algorithm=self._keys.algorithm)

    def verify(self, token: str) -> Principal:
        """The token's principal. A token verified before is not decoded again, but expiry is
        checked on every call (with the same leeway as the first check)."""
        principal = self._verified(token)
        if principal.expires_at <= time.time() - LEEWAY_S:
            raise InvalidToken("the access token has expired; refresh it")
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._keys.verifying_key,
                algorithms=[self._keys.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the access token has expired; refresh it") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the access token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the access token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the access token is not valid: {exc}") from None
        if not all(isinstance(claims[c], str) for c in ("sub", "wid", "role", "sid", "jti")):
            raise InvalidToken("the access token is not valid: malformed claims")
        return Principal(
            user_id=claims["sub"],
            workspace_id=claims["wid"],
            role=claims["role"],
            session_id=claims["sid"],
            issued_ms=int(claims.get("ims") or claims["iat"] * 1000),
            expires_at=float(claims["exp"]),
        )
