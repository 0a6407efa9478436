"""infra.secrets: the vault, credential checks and redaction."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.fernet import Fernet

from infra.secrets import CredentialError, Vault, check_credential, redact, secret_strings


def test_a_credential_round_trips_through_the_vault() -> None:
    vault = Vault([Fernet.generate_key()])
    token = vault.encrypt("http_bearer", {"token": "tok-123456"})
    assert "tok-123456" not in token
    assert vault.decrypt(token) == {"kind": "http_bearer", "token": "tok-123456"}


def test_after_rotation_old_ciphertexts_still_decrypt_and_new_ones_use_the_new_key() -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old_vault = Vault([old_key])
    rotated_vault = Vault([new_key, old_key])
    old_token = old_vault.encrypt("openai", {"api_key": "sk-old-key"})
    assert rotated_vault.decrypt(old_token) == {"kind": "openai", "api_key": "sk-old-key"}
    new_token = rotated_vault.encrypt("openai", {"api_key": "sk-new-key"})
    with pytest.raises(CredentialError):
        old_vault.decrypt(new_token)  # the new key encrypts
    rewritten = rotated_vault.rotate(old_token)
    assert Vault([new_key]).decrypt(rewritten)["api_key"] == "sk-old-key"


@pytest.mark.parametrize("ciphertext", ["garbage", "", "gAAAAABtampered"])
def test_a_token_no_key_opens_is_a_credential_error(ciphertext: str) -> None:
    with pytest.raises(CredentialError, match="cannot be decrypted"):
        Vault([Fernet.generate_key()]).decrypt(ciphertext)


def test_a_token_of_another_key_is_a_credential_error_and_a_value_error() -> None:
    token = Vault([Fernet.generate_key()]).encrypt("http_bearer", {"token": "abcdef"})
    with pytest.raises(ValueError):
        Vault([Fernet.generate_key()]).decrypt(token)


def test_a_token_that_holds_no_credential_is_a_credential_error() -> None:
    key = Fernet.generate_key()
    token = Fernet(key).encrypt(b"not json").decode()
    with pytest.raises(CredentialError, match="not a credential"):
        Vault([key]).decrypt(token)


def test_a_vault_refuses_keys_that_are_not_fernet_keys() -> None:
    with pytest.raises(CredentialError):
        Vault([b"not a key"])
    with pytest.raises(CredentialError):
        Vault([])


def test_the_vault_refuses_to_encrypt_an_invalid_credential() -> None:
    with pytest.raises(CredentialError, match="token"):
        Vault([Fernet.generate_key()]).encrypt("http_bearer", {})


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("http_bearer", {"token": "t0ken"}),
        ("http_basic", {"username": "ann", "password": "pw"}),
        ("http_header", {"name": "X-Api-Key", "value": "v"}),
        ("postgres", {"url": "postgresql://u:p@db.example:5432/app"}),
        ("postgres", {"url": "postgresql://u@/app?host=/var/run/postgresql"}),
        ("openai", {"api_key": "sk-1"}),
        ("openai", {"api_key": "sk-1", "base_url": "http://localhost:11434/v1"}),
    ],
)
def test_valid_credentials_pass_the_check(kind: str, payload: dict[str, Any]) -> None:
    check_credential(kind, payload)


@pytest.mark.parametrize(
    ("kind", "payload", "complaint"),
    [
        ("ftp", {"token": "x"}, "unknown credential kind"),
        ("http_bearer", {}, "'token'"),
        ("http_bearer", {"token": ""}, "'token'"),
        ("http_bearer", {"token": 5}, "'token'"),
        ("http_bearer", {"token": "a", "extra": "b"}, "unknown fields: extra"),
        ("http_bearer", {"token": "a\r\nX-Evil: 1"}, "one line"),
        ("http_basic", {"username": "a:b", "password": "p"}, "may not contain ':'"),
        ("http_basic", {"username": "ann"}, "'password'"),
        ("http_header", {"name": "Bad Header", "value": "v"}, "is not a header"),
        ("postgres", {"url": "mysql://u:p@h/db"}, "postgresql://"),
        ("postgres", {"url": "postgresql:///db"}, "no host"),
        ("openai", {"api_key": "k", "base_url": "ftp://x"}, "http(s) URL"),
        ("openai", {"api_key": "k", "base_url": 3}, "must be a string"),
    ],
)
def test_invalid_credentials_are_refused_with_a_clear_message(
    kind: str, payload: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(CredentialError) as info:
        check_credential(kind, payload)
    assert complaint in str(info.value)


def test_secret_strings_of_a_postgres_url_include_its_password_in_both_spellings() -> None:
    found = secret_strings({"kind": "postgres", "url": "postgresql://app:p%40ss-word@h:5432/db"})
    assert {"p%40ss-word", "p@ss-word", "postgresql://app:p%40ss-word@h:5432/db"} <= set(found)


def test_secret_strings_include_the_basic_auth_header_value_but_not_the_user_name() -> None:
    found = secret_strings({"kind": "http_basic", "username": "alice", "password": "wonder"})
    assert "wonder" in found
    assert base64.b64encode(b"alice:wonder").decode() in found
    assert "alice" not in found
    assert "http_basic" not in found


def test_short_values_are_not_worth_redacting() -> None:
    assert secret_strings({"kind": "http_bearer", "token": "abc"}) == []


def test_secret_strings_are_longest_first() -> None:
    found = secret_strings({"kind": "postgres", "url": "postgresql://u:secretpw@h/db"})
    assert found == sorted(found, key=len, reverse=True)


def test_redact_replaces_every_occurrence_and_longer_secrets_first() -> None:
    text = "key=sk-abcdef, again sk-abcdef, prefix sk-abc"
    assert redact(text, ["sk-abc", "sk-abcdef"]) == "key=***, again ***, prefix ***"
    assert redact("abc stays", ["abc"]) == "abc stays"


def test_secrets_are_also_hidden_percent_encoded_as_in_a_url() -> None:
    secret = {"kind": "http_bearer", "token": "tok/en+with space&more"}
    page = "https://x/cb?token=tok%2Fen%2Bwith%20space%26more&t2=tok%2Fen%2Bwith+space%26more"
    assert redact(page, secret_strings(secret)) == "https://x/cb?token=***&t2=***"
