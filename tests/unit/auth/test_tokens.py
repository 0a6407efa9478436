"""Access tokens: what is accepted, and every forgery and misuse that is not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from infra.keys import SigningKeys, signing_keys
from infra.settings import load_settings
from web.auth.tokens import InvalidToken, Tokens

SECRET = "s" * 40
HS = SigningKeys("HS256", SECRET, SECRET)


def tokens(keys: SigningKeys = HS, ttl: int = 900) -> Tokens:
    return Tokens(keys, issuer="autoops", audience="autoops-api", ttl_s=ttl)


def claims(**override: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "autoops",
        "aud": "autoops-api",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": "j",
        "sub": "u",
        "wid": "w",
        "role": "owner",
        "sid": "s",
    }
    return {**base, **override}


def _pem_pair(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, public


def test_an_issued_token_verifies_to_its_principal() -> None:
    t = tokens()
    p = t.verify(t.issue("user-1", "ws-1", "editor", "session-1"))
    assert (p.user_id, p.workspace_id, p.role, p.session_id) == (
        "user-1",
        "ws-1",
        "editor",
        "session-1",
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_key_pair_algorithms_sign_and_verify(algorithm: str, tmp_path: Path) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem, public = _pem_pair(private)
    (tmp_path / "key.pem").write_text(pem)
    (tmp_path / "pub.pem").write_text(public)
    settings = load_settings(
        {
            "AUTOOPS_JWT_ALGORITHM": algorithm,
            "AUTOOPS_JWT_PRIVATE_KEY_FILE": str(tmp_path / "key.pem"),
            "AUTOOPS_JWT_PUBLIC_KEY_FILE": str(tmp_path / "pub.pem"),
        }
    )
    t = tokens(signing_keys(settings))
    assert t.verify(t.issue("u", "w", "viewer", "s")).user_id == "u"
    # Algorithm confusion: an HS256 token whose "secret" is the public key.
    # PyJWT will not even sign that, so the attacker's token is built by hand.
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims())}"
    mac = hmac.new(public.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        t.verify(forged)


def _b64(part: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def test_a_forged_signature_is_refused() -> None:
    forged = jwt.encode(claims(), "another-secret-of-enough-length-1234", algorithm="HS256")
    with pytest.raises(InvalidToken, match="not valid"):
        tokens().verify(forged)


def test_alg_none_is_refused() -> None:
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}."
    with pytest.raises(InvalidToken):
        tokens().verify(unsigned)


def test_a_token_signed_with_another_allowed_looking_algorithm_is_refused() -> None:
    other = jwt.encode(claims(), SECRET * 2, algorithm="HS512")
    with pytest.raises(InvalidToken):
        tokens().verify(other)


@pytest.mark.parametrize(
    ("override", "reason"),
    [  # times from when the test runs, not from when it was collected (minutes earlier)
        (lambda now: {"exp": now - 60}, "expired"),
        (lambda now: {"nbf": now + 600}, "not valid yet"),
        (lambda now: {"iat": now + 600}, "not valid yet"),
        (lambda now: {"aud": "someone-else"}, "audience"),
        (lambda now: {"iss": "evil"}, "issuer"),
        (lambda now: {"wid": None}, "not valid"),
    ],
)
def test_expired_early_and_foreign_tokens_are_refused(
    override: Callable[[int], dict[str, object]], reason: str
) -> None:
    token = jwt.encode(claims(**override(int(time.time()))), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=reason):
        tokens().verify(token)


def test_a_token_missing_a_required_claim_is_refused() -> None:
    incomplete = claims()
    del incomplete["sid"]
    with pytest.raises(InvalidToken):
        tokens().verify(jwt.encode(incomplete, SECRET, algorithm="HS256"))


def test_development_generates_one_private_secret_and_keeps_it(tmp_path: Path) -> None:
    settings = load_settings({"AUTOOPS_DATA_DIR": str(tmp_path)})
    first = signing_keys(settings)
    assert signing_keys(settings) == first and len(first.signing_key) >= 32
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_a_token_verified_before_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    t = tokens()
    token = jwt.encode(claims(exp=int(time.time()) + 30), SECRET, algorithm="HS256")
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    assert t.verify(token).user_id == "u"
    assert t.verify(token).user_id == "u"
    assert len(decoded) == 1  # remembered, not decoded again
    later = time.time() + 30 + 6  # past expiry and the leeway
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        t.verify(token)
