"""Passwords: the strength policy, email normalisation, and bcrypt hashing.

bcrypt reads at most 72 bytes; passwords are first reduced with SHA-256 (base64, 44 bytes) so
every character of a long passphrase counts.
"""

from __future__ import annotations

import base64
import hashlib

import bcrypt
import zxcvbn
from email_validator import EmailNotValidError, validate_email

from command_side.errors import ValidationFailed

MIN_LENGTH = 10
MAX_LENGTH = 1024
#: zxcvbn is quadratic in the input; the policy judges this many leading characters.
_JUDGED = 100


def normalise_email(email: str) -> str:
    """The canonical form of an address (trimmed, lower case), or VALIDATION."""
    try:
        valid = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(f"not a valid email address: {exc}", field="email") from None
    return valid.normalized.lower()


def check_strength(password: str, email: str, display_name: str = "") -> None:
    """Refuse weak passwords with a message that says why."""
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(
            f"the password must be at least {MIN_LENGTH} characters long", field="password"
        )
    if len(password) > MAX_LENGTH:
        raise ValidationFailed(
            f"the password must be at most {MAX_LENGTH} characters long", field="password"
        )
    lowered = password.lower()
    local = email.split("@", 1)[0].lower()
    if lowered == email.lower() or (len(local) >= 4 and local in lowered):
        raise ValidationFailed("the password must not contain your email", field="password")
    judged = zxcvbn.zxcvbn(password[:_JUDGED], user_inputs=[email, local, display_name])
    sequence = judged["sequence"]
    if len(sequence) == 1 and sequence[0].get("dictionary_name") == "passwords":
        raise ValidationFailed("this is a common password; choose another", field="password")
    if judged["score"] < 3:
        feedback = judged["feedback"]
        hint = " ".join([feedback.get("warning") or "", *feedback.get("suggestions", [])]).strip()
        raise ValidationFailed(
            f"the password is too easy to guess{': ' + hint if hint else ''}", field="password"
        )


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode()).digest())


def hash_password(password: str, cost: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(cost)).decode()


def verify_password(password: str, hashed: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    return bcrypt.checkpw(_prehash(password), hashed.encode())


def token_hash(secret: str) -> str:
    """Refresh-token secrets are random and long: SHA-256 is the right hash for them."""
    return hashlib.sha256(secret.encode()).hexdigest()
