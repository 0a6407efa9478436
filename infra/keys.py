"""Access-token keys from settings: a configured secret or key pair, or in development a
secret generated once and kept in the data directory."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ConfigError
from infra.settings import Settings

SECRET_FILE = "jwt-secret"


@dataclass(frozen=True)
class SigningKeys:
    algorithm: str
    signing_key: str
    verifying_key: str


def signing_keys(settings: Settings) -> SigningKeys:
    alg = settings.jwt_algorithm
    if alg != "HS256":
        assert settings.jwt_private_key_file and settings.jwt_public_key_file
        return SigningKeys(
            alg,
            _read(settings.jwt_private_key_file, "AUTOOPS_JWT_PRIVATE_KEY_FILE"),
            _read(settings.jwt_public_key_file, "AUTOOPS_JWT_PUBLIC_KEY_FILE"),
        )
    secret = settings.jwt_secret
    if secret is None:
        if settings.production:  # load_settings refuses this already; never sign with less
            raise ConfigError("production needs AUTOOPS_JWT_SECRET")
        secret = _generated(
            Path(settings.data_dir) / SECRET_FILE, lambda: secrets.token_urlsafe(48)
        )
    return SigningKeys(alg, secret, secret)


def _read(path: Path, variable: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None


def _generated(path: Path, make: Callable[[], str]) -> str:
    """Created once, readable by its owner only; racing processes all end up with the first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    for _ in range(100):  # another process may be writing it right now
        secret = path.read_text().strip()
        if secret:
            return secret
    raise ConfigError(f"{path} is empty; delete it to have a new secret generated")


CREDENTIALS_KEY_FILE = "credentials-key"


def credentials_keys(settings: Settings) -> list[bytes]:
    """The Fernet keys of workspace credentials, newest first: configured, or in development
    generated once into the data directory."""
    from cryptography.fernet import Fernet

    raw = settings.credentials_key
    if raw is None:
        if settings.production:  # the api (encrypts) and runners (decrypt) need it
            raise ConfigError(
                "production needs AUTOOPS_CREDENTIALS_KEY (a Fernet key: python -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
        path = Path(settings.data_dir) / CREDENTIALS_KEY_FILE
        raw = _generated(path, lambda: Fernet.generate_key().decode())
    keys = [k.strip().encode() for k in raw.split(",") if k.strip()]
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                "AUTOOPS_CREDENTIALS_KEY must be Fernet keys (32 url-safe base64-encoded bytes)"
            ) from None
    if not keys:
        raise ConfigError("AUTOOPS_CREDENTIALS_KEY is empty")
    return keys
