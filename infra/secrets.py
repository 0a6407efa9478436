"""Workspace credentials at rest: Fernet-encrypted JSON, checked by kind, redacted from text.

The api encrypts a credential when it is created; runners decrypt the ones a task names. Keys
rotate by putting a new key first (`AUTOOPS_CREDENTIALS_KEY`): the first encrypts, every key
decrypts, so ciphertexts made under an older key keep working until rewritten with `rotate`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from infra.errors import InfraError
from infra.keys import credentials_keys
from infra.settings import Settings

#: Required and optional fields of each credential kind.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "http_bearer": (("token",), ()),
    "http_basic": (("username", "password"), ()),
    "http_header": (("name", "value"), ()),
    "postgres": (("url",), ()),
    "openai": (("api_key",), ("base_url",)),
}
#: Fields that identify rather than authenticate: never redacted (a user name or a header name
#: would otherwise vanish from every output it happens to appear in).
_PUBLIC_FIELDS = frozenset({"username", "name", "base_url"})
#: Shorter values are too likely to occur by chance to be worth redacting.
MIN_SECRET_LENGTH = 4
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class CredentialError(InfraError, ValueError):
    """A credential that is malformed, of an unknown kind, or cannot be decrypted."""


def check_credential(kind: str, payload: Mapping[str, Any]) -> None:
    """CredentialError naming the problem unless `payload` is a valid credential of `kind`."""
    if kind not in FIELDS:
        raise CredentialError(f"unknown credential kind {kind!r}; known: {', '.join(FIELDS)}")
    required, optional = FIELDS[kind]
    unknown = sorted(set(payload) - set(required) - set(optional))
    if unknown:
        raise CredentialError(f"{kind} credential has unknown fields: {', '.join(unknown)}")
    for name in required:
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            raise CredentialError(f"{kind} credential needs {name!r} (a non-empty string)")
    for name in optional:
        if name in payload and not isinstance(payload[name], str):
            raise CredentialError(f"{kind} credential's {name!r} must be a string")
    for name, value in payload.items():
        if "\r" in value or "\n" in value or "\0" in value:
            raise CredentialError(f"{kind} credential's {name!r} must be one line")
    _check_meaning(kind, payload)


def _check_meaning(kind: str, payload: Mapping[str, str]) -> None:
    if kind == "http_basic" and ":" in payload["username"]:
        raise CredentialError("http_basic credential's username may not contain ':'")
    if kind == "http_header" and not _HEADER_NAME.fullmatch(payload["name"]):
        raise CredentialError(f"http_header credential's name {payload['name']!r} is not a header")
    if kind == "postgres":
        parts = urlsplit(payload["url"])
        query = dict(parse_qsl(parts.query))
        if parts.scheme not in ("postgresql", "postgres"):
            raise CredentialError("postgres credential's url must start with postgresql://")
        if not (parts.hostname or query.get("host")):
            raise CredentialError("postgres credential's url names no host")
    if kind == "openai" and payload.get("base_url"):
        parts = urlsplit(payload["base_url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CredentialError("openai credential's base_url must be an http(s) URL")


def secret_strings(payload: Mapping[str, Any]) -> list[str]:
    """The strings of a (decrypted) credential that must never be shown, longest first: its
    secret fields, plus the forms they take on the wire (a URL's password, a basic-auth
    header value)."""
    found = {
        value
        for name, value in payload.items()
        if name != "kind" and name not in _PUBLIC_FIELDS and isinstance(value, str)
    }
    url = payload.get("url")
    if isinstance(url, str):
        parts = urlsplit(url)
        raw_password = parts.netloc.rpartition("@")[0].partition(":")[2]
        found |= {raw_password, unquote(raw_password)}
        found |= {v for k, v in parse_qsl(parts.query) if k == "password"}
    username, password = payload.get("username"), payload.get("password")
    if isinstance(username, str) and isinstance(password, str):
        found.add(base64.b64encode(f"{username}:{password}".encode()).decode())
    # As they appear inside URLs (a page's address, a query string): percent-encoded.
    found |= {quote(s, safe="") for s in found} | {quote_plus(s) for s in found}
    return sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (of at least 4 characters) replaced by ***."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


class Vault:
    """Encrypts and decrypts credentials; the first key encrypts, every key decrypts."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise CredentialError("a vault needs at least one Fernet key")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError):
            raise CredentialError("vault keys must be Fernet keys") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """The vault of `AUTOOPS_CREDENTIALS_KEY` (generated in development)."""
        return cls(credentials_keys(settings))

    def encrypt(self, kind: str, payload: Mapping[str, Any]) -> str:
        """The ciphertext of a checked credential (CredentialError if it is not valid)."""
        check_credential(kind, payload)
        plain = json.dumps({"kind": kind, "payload": dict(payload)}).encode()
        return self._fernet.encrypt(plain).decode()

    def decrypt(self, ciphertext: str) -> dict[str, Any]:
        """`{"kind": ..., **payload}`; CredentialError for a token no key opens."""
        try:
            plain = self._fernet.decrypt(ciphertext.encode())
        except (InvalidToken, TypeError, AttributeError):
            raise CredentialError(
                "credential cannot be decrypted (wrong key or damaged ciphertext)"
            ) from None
        try:
            document = json.loads(plain)
            return {"kind": document["kind"], **document["payload"]}
        except (ValueError, KeyError, TypeError):
            raise CredentialError("the decrypted value is not a credential") from None

    def rotate(self, ciphertext: str) -> str:
        """The same credential encrypted under the first key (after a key rotation)."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except (InvalidToken, TypeError, AttributeError):
            raise CredentialError(
                "credential cannot be decrypted (wrong key or damaged ciphertext)"
            ) from None
