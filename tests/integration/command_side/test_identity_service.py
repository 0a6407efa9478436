"""Identity use cases on real PostgreSQL: accounts, sessions, members and two-factor."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pyotp
import pytest

from command_side.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from command_side.identity import Grant, IdentityService, IdentityStore
from infra.settings import eventsourcing_env_for

PASSWORD = "violet-Harbour-lantern-42"


@pytest.fixture
def identity(database_url: str) -> Iterator[IdentityService]:
    store = IdentityStore(env=eventsourcing_env_for(database_url))
    service = IdentityService(store, bcrypt_cost=4, refresh_ttl_s=3600)
    yield service
    service.close()


def register(svc: IdentityService, email: str, workspace: str = "Acme") -> object:
    return svc.register(email, PASSWORD, email.split("@")[0].title(), workspace)


def join(svc: IdentityService, inviter: Grant, member: Grant, role: str) -> Grant:
    """The member accepts an invitation of the inviter's workspace."""
    _, token = svc.invite(inviter.user_id, inviter.workspace_id, member.email, role)
    return svc.accept_invitation(member.user_id, token)


def test_register_creates_an_owner_of_a_new_workspace_with_a_normalised_email(
    identity: IdentityService,
) -> None:
    grant = identity.register("  Ada@Example.COM ", PASSWORD, "Ada", "Engines")
    assert (grant.email, grant.role, grant.workspace_name) == (
        "ada@example.com",
        "owner",
        "Engines",
    )
    with pytest.raises(Conflict):
        identity.register("ada@example.com", PASSWORD, "Other Ada", "Other")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1!", "at least 10"),
        ("password123", "common password"),
        ("ada.lovelace-x", "email"),
        ("aaaaaaaaaaaa", "too easy"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(
    identity: IdentityService, password: str, reason: str
) -> None:
    with pytest.raises(ValidationFailed, match=reason):
        identity.register("ada.lovelace@example.com", password, "Ada", "Engines")


def test_login_checks_the_password_and_lands_in_the_workspace(identity: IdentityService) -> None:
    registered = identity.register("bob@example.com", PASSWORD, "Bob", "Bobs")
    with pytest.raises(Unauthenticated, match="wrong email or password"):
        identity.login("bob@example.com", PASSWORD + "x", None)
    with pytest.raises(Unauthenticated, match="wrong email or password"):
        identity.login("nobody@example.com", PASSWORD, None)
    grant = identity.login("BOB@example.com", PASSWORD, None)
    assert (grant.user_id, grant.workspace_id) == (registered.user_id, registered.workspace_id)
    assert grant.session_id != registered.session_id


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_family(
    identity: IdentityService,
) -> None:
    first = identity.register("carol@example.com", PASSWORD, "Carol", "C")
    second = identity.refresh(first.refresh_token)
    assert second.session_id == first.session_id
    assert second.refresh_token != first.refresh_token
    with pytest.raises(Unauthenticated, match="used before") as stolen:
        identity.refresh(first.refresh_token)  # the thief replays the old token
    assert stolen.value.details["sessionRevoked"] == 1
    with pytest.raises(Unauthenticated, match="ended"):
        identity.refresh(second.refresh_token)  # the family is gone for everyone
    with pytest.raises(Unauthenticated):
        identity.refresh("not-a-token")


def test_racing_refreshes_of_one_token_let_one_win_and_revoke_the_family(
    identity: IdentityService,
) -> None:
    grant = identity.register("race@example.com", PASSWORD, "Race", "R")

    def attempt(token: str) -> str | None:
        try:
            return identity.refresh(token).refresh_token
        except Unauthenticated:
            return None

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(attempt, [grant.refresh_token] * 4))
    winners = [t for t in outcomes if t is not None]
    assert len(winners) == 1
    with pytest.raises(Unauthenticated):  # the losers replayed a rotated token: family revoked
        identity.refresh(winners[0])


def test_logout_ends_the_session(identity: IdentityService) -> None:
    grant = identity.register("dan@example.com", PASSWORD, "Dan", "D")
    with pytest.raises(Unauthenticated):
        identity.logout(grant.refresh_token, "someone-else")
    identity.logout(grant.refresh_token, grant.user_id)
    with pytest.raises(Unauthenticated):
        identity.refresh(grant.refresh_token)


def test_an_invitation_joins_only_with_its_token_and_only_its_address(
    identity: IdentityService,
) -> None:
    owner = identity.register("owner@example.com", PASSWORD, "Owner", "Team")
    member_id, token = identity.invite(
        owner.user_id, owner.workspace_id, "Fay@Example.com", "viewer"
    )
    # Signing up with the address joins nothing by itself (no proof of the mailbox yet).
    fay = identity.register("fay@example.com", PASSWORD, "Fay", "Fays")
    with pytest.raises(NotFound):
        identity.switch_workspace(fay.user_id, owner.workspace_id)
    eve = identity.register("eve@example.com", PASSWORD, "Eve", "Eves")
    with pytest.raises(NotFound):  # a token that reached the wrong account is useless
        identity.accept_invitation(eve.user_id, token)
    with pytest.raises(NotFound):
        identity.accept_invitation(fay.user_id, token[:-2] + "xx")
    joined = identity.accept_invitation(fay.user_id, token)
    assert (joined.role, joined.workspace_name, joined.user_id) == ("viewer", "Team", fay.user_id)
    assert identity.switch_workspace(fay.user_id, owner.workspace_id).role == "viewer"
    with pytest.raises(NotFound):  # used up
        identity.accept_invitation(fay.user_id, token)
    with pytest.raises(ValidationFailed, match="member already"):
        identity.invite(owner.user_id, owner.workspace_id, "fay@example.com", "editor")
    assert member_id != fay.user_id


def test_an_invited_owner_does_not_keep_the_workspace_owned(identity: IdentityService) -> None:
    owner = identity.register("sole@example.com", PASSWORD, "Sole", "Team")
    identity.invite(owner.user_id, owner.workspace_id, "ghost@example.com", "owner")
    with pytest.raises(Forbidden, match="last owner"):
        identity.remove_member(owner.user_id, owner.workspace_id, owner.user_id)


def test_roles_limit_who_manages_members_and_the_last_owner_stays(
    identity: IdentityService,
) -> None:
    owner = identity.register("o@example.com", PASSWORD, "Owner", "Team")
    admin = identity.register("a@example.com", PASSWORD, "Admin", "A")
    editor = identity.register("e@example.com", PASSWORD, "Editor", "E")
    ws = owner.workspace_id
    join(identity, owner, admin, "admin")
    join(identity, owner, editor, "editor")
    with pytest.raises(Forbidden):
        identity.invite(editor.user_id, ws, "x@example.com", "viewer")
    with pytest.raises(Forbidden):
        identity.change_role(editor.user_id, ws, editor.user_id, "admin")  # self-escalation
    with pytest.raises(Forbidden):
        identity.change_role(admin.user_id, ws, admin.user_id, "owner")
    with pytest.raises(Forbidden):
        identity.remove_member(admin.user_id, ws, owner.user_id)
    with pytest.raises(Forbidden, match="last owner"):
        identity.change_role(owner.user_id, ws, owner.user_id, "admin")
    with pytest.raises(Forbidden, match="last owner"):
        identity.remove_member(owner.user_id, ws, owner.user_id)
    identity.change_role(admin.user_id, ws, editor.user_id, "viewer")
    identity.remove_member(admin.user_id, ws, editor.user_id)
    with pytest.raises(NotFound):
        identity.switch_workspace(editor.user_id, ws)


def test_a_removed_member_cannot_refresh_into_the_workspace(identity: IdentityService) -> None:
    owner = identity.register("o2@example.com", PASSWORD, "Owner", "Team")
    gus = join(identity, owner, identity.register("g@example.com", PASSWORD, "Gus", "G"), "editor")
    identity.remove_member(owner.user_id, owner.workspace_id, gus.user_id)
    with pytest.raises(Unauthenticated):
        identity.refresh(gus.refresh_token)


def test_two_factor_needs_a_confirmed_code_then_guards_login(identity: IdentityService) -> None:
    grant = identity.register("h@example.com", PASSWORD, "Hal", "H")
    with pytest.raises(Unauthenticated):
        identity.enable_totp(grant.user_id, grant.workspace_id, "wrong password")
    uri = identity.enable_totp(grant.user_id, grant.workspace_id, PASSWORD)
    secret = pyotp.parse_uri(uri).secret
    assert identity.login("h@example.com", PASSWORD, None)  # not on until confirmed
    with pytest.raises(ValidationFailed):
        identity.confirm_totp(grant.user_id, grant.workspace_id, "000000")
    identity.confirm_totp(grant.user_id, grant.workspace_id, pyotp.TOTP(secret).now())
    with pytest.raises(Unauthenticated, match="code") as asked:
        identity.login("h@example.com", PASSWORD, None)
    assert asked.value.details["totpRequired"] == 1
    with pytest.raises(Unauthenticated):
        identity.login("h@example.com", PASSWORD, "123456")
    code = pyotp.TOTP(secret).now()
    assert identity.login("h@example.com", PASSWORD, code)
    with pytest.raises(Unauthenticated):  # a code signs in once
        identity.login("h@example.com", PASSWORD, code)
    identity.disable_totp(grant.user_id, grant.workspace_id, pyotp.TOTP(secret).now())
    assert identity.login("h@example.com", PASSWORD, None)


def test_changing_the_password_ends_other_sessions(identity: IdentityService) -> None:
    grant = identity.register("i@example.com", PASSWORD, "Ivy", "I")
    with pytest.raises(Unauthenticated):
        identity.change_password(grant.user_id, grant.workspace_id, "wrong", "x" * 12)
    fresh, changes = identity.change_password(
        grant.user_id, grant.workspace_id, PASSWORD, "amber-Meadow-quartz-77"
    )
    assert [c.workspace_id for c in changes] == [grant.workspace_id]
    with pytest.raises(Unauthenticated):
        identity.refresh(grant.refresh_token)
    assert identity.refresh(fresh.refresh_token).user_id == grant.user_id
    with pytest.raises(Unauthenticated):
        identity.login("i@example.com", PASSWORD, None)


def test_operators_create_users_in_new_or_existing_workspaces(identity: IdentityService) -> None:
    user_id, ws, created = identity.create_user(
        "ops@example.com", PASSWORD, "", "Operations", "owner"
    )
    other, same, _ = identity.create_user("dev@example.com", PASSWORD, "Dev", ws, "editor")
    assert same == ws and other != user_id and created
    assert identity.switch_workspace(other, ws).role == "editor"
    with pytest.raises(ValidationFailed, match="owner"):
        identity.create_user("x@example.com", PASSWORD, "X", "Brand new", "viewer")
    # An id that names no workspace is a typo: never a new workspace called by that id.
    with pytest.raises(NotFound):
        identity.create_user("x@example.com", PASSWORD, "X", str(uuid4()), "owner")
    # An existing account joins; its password is not the one given (nor said to be).
    again, home, created = identity.create_user("ops@example.com", "other", "", "Second", "owner")
    assert again == user_id and home != ws and not created
