"""Identity events as public envelopes: each matches its schema and carries no secret."""

from __future__ import annotations

import json
from uuid import uuid4

import jsonschema

from command_side.contracts import envelope as env
from command_side.contracts.schemas import EVENT_TYPES, schema_for
from command_side.identity.aggregates import Address, Session, User, Workspace


def _all_identity_events() -> list[object]:
    uid, wid = uuid4(), uuid4()
    actor, ws = str(uid), str(wid)
    address = Address(email="a@example.com", actor_id=actor, workspace_id=ws)
    address.claim(actor, actor, ws)
    user = User(
        user_id=uid,
        email="a@example.com",
        display_name="A",
        password_hash="$2b$secret-hash",
        actor_id=actor,
        workspace_id=ws,
    )
    user.password_changed("$2b$other-secret", 1.0, actor, ws)
    user.joined("owner", actor, ws)
    user.totp_requested("TOTPSECRETBASE32", actor, ws)
    user.totp_enabled_(actor, ws)
    user.totp_disabled(actor, ws)
    user.login_succeeded("password", "127.0.0.1", actor, ws)
    user.login_failed("password", "127.0.0.1", actor, ws)
    user.left(actor, ws)
    workspace = Workspace(workspace_id=wid, name="W", actor_id=actor)
    workspace.add(actor, "a@example.com", "A", "owner", actor)
    invited = workspace.invite("b@example.com", "editor", "invitation-secret-hash", actor)
    workspace.invitation_accepted(invited, "u2", "B", "u2", ws)
    workspace.change_role("u2", "viewer", actor, "owner")
    workspace.remove("u2", actor, "owner")
    session = Session(
        session_id=uuid4(),
        user_id=actor,
        token_hash="secret-token-hash",
        expires_at=2.0,
        actor_id=actor,
        workspace_id=ws,
    )
    session.refreshed("next-secret-hash", 3.0, actor, ws)
    session.revoked_("logout", actor, ws)
    return [
        *address.collect_events(),
        *user.collect_events(),
        *workspace.collect_events(),
        *session.collect_events(),
    ]


def test_identity_envelopes_match_their_schemas_and_hide_secrets() -> None:
    types = set()
    for position, event in enumerate(_all_identity_events(), 1):
        envelope = env.to_envelope("identity", event, position)
        jsonschema.validate(envelope, schema_for(envelope["type"]))
        text = json.dumps(envelope)
        for secret in (
            "secret-hash",
            "TOTPSECRET",
            "secret-token-hash",
            "other-secret",
            "invitation-secret-hash",
        ):
            assert secret not in text, envelope["type"]
        assert envelope["workspace_id"], envelope["type"]
        types.add(envelope["type"])
    assert types == {t for t in EVENT_TYPES if t.startswith("identity.")}
