"""Identity use cases: sign-up, sign-in, refresh-token rotation, members and two-factor.

Synchronous like the store under it (the api calls it from a worker thread). Every use case
loads what it needs, changes aggregates, saves them in one transaction and retries from fresh
state when another writer got there first. Access tokens are minted by the api from a `Grant`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID, uuid4

import pyotp
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from command_side.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from command_side.identity import passwords
from command_side.identity.aggregates import (
    Address,
    Session,
    User,
    Workspace,
    address_id,
    check_role,
    rank,
)
from command_side.identity.store import IdentityStore
from command_side.validation import check_name

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 8
SYSTEM = "system"
ISSUER = "AutoOps"


@dataclass(frozen=True)
class Grant:
    """A signed-in user in one workspace, with the refresh token of their session."""

    user_id: str
    email: str
    display_name: str
    workspace_id: str
    workspace_name: str
    role: str
    session_id: str
    refresh_token: str
    refresh_expires_at: float


@dataclass(frozen=True)
class MembershipChange:
    """Whose access in which workspace changed: their older access tokens must stop."""

    workspace_id: str
    user_id: str | None


class IdentityService:
    def __init__(self, store: IdentityStore, *, bcrypt_cost: int, refresh_ttl_s: int) -> None:
        self.store = store
        self._cost = bcrypt_cost
        self._refresh_ttl_s = refresh_ttl_s
        # A miss costs as much as a hit, so timing does not tell which emails have accounts.
        self._dummy_hash = passwords.hash_password(secrets.token_hex(8), bcrypt_cost)
        self._background = ThreadPoolExecutor(1, thread_name_prefix="identity-audit")

    def close(self) -> None:
        self._background.shutdown(wait=True)
        self.store.close()

    # -- accounts ---------------------------------------------------------------------------

    def register(
        self,
        email: str,
        password: str,
        display_name: str,
        workspace_name: str,
        client_address: str = "",
    ) -> Grant:
        email = passwords.normalise_email(email)
        display_name = check_name(display_name, "displayName")
        workspace_name = check_name(workspace_name, "workspaceName")
        passwords.check_strength(password, email, display_name)
        password_hash = passwords.hash_password(password, self._cost)
        user_id, workspace_id = uuid4(), uuid4()
        actor, home = str(user_id), str(workspace_id)

        def attempt() -> Grant:
            user, address = self._new_user(user_id, email, display_name, password_hash, home)
            workspace = Workspace(workspace_id=workspace_id, name=workspace_name, actor_id=actor)
            workspace.add(actor, email, display_name, "owner", actor)
            user.joined("owner", actor, home)
            user.login_succeeded("register", client_address, actor, home)
            session, token = self._start_session(actor, home)
            self.store.save(user, address, workspace, session)
            return self._grant(user, workspace, session, token)

        return _retrying(attempt)

    def create_user(
        self, email: str, password: str, display_name: str, workspace: str, role: str
    ) -> tuple[str, str, bool]:
        """For operators: an account (or an existing one) joins a workspace, given by id or,
        when no workspace has that name's id, created with that name (then the role must be
        owner). An id that names no workspace is NOT_FOUND (a typo, not a workspace to
        create with the id for a name). Returns the user and workspace ids, and whether the
        account was created (and so the password set)."""
        email = passwords.normalise_email(email)
        check_role(role)

        def attempt() -> tuple[str, str, bool]:
            target = _parse_uuid(workspace)
            found = self.store.find(Workspace, target) if target else None
            if found is None and target is not None:
                raise NotFound(f"workspace {workspace} does not exist")
            if found is None:
                if role != "owner":
                    raise ValidationFailed("a new workspace needs an owner: use --role owner")
                found = Workspace(
                    workspace_id=uuid4(), name=check_name(workspace, "workspace"), actor_id=SYSTEM
                )
            address = self.store.find(Address, address_id(email))
            changed: list[Aggregate] = []
            if address is not None and address.user_id is not None:
                user = self.store.get(User, UUID(address.user_id))
            else:
                name = check_name(display_name or email.split("@")[0], "displayName")
                passwords.check_strength(password, email, name)
                hashed = passwords.hash_password(password, self._cost)
                user, address = self._new_user(uuid4(), email, name, hashed, found.workspace_id)
                changed.append(address)
            if found.role_of(str(user.id)) is not None:
                raise ValidationFailed(f"{email} is a member of that workspace already")
            found.add(str(user.id), email, user.display_name, role, SYSTEM)
            user.joined(role, SYSTEM, found.workspace_id)
            self.store.save(user, found, *changed)
            return str(user.id), found.workspace_id, bool(changed)

        return _retrying(attempt)

    def _new_user(
        self, user_id: UUID, email: str, display_name: str, password_hash: str, home: str
    ) -> tuple[User, Address]:
        """A user claiming `email` (CONFLICT when an account has it)."""
        actor = str(user_id)
        address = self.store.find(Address, address_id(email))
        if address is None:
            address = Address(email=email, actor_id=actor, workspace_id=home)
        address.claim(actor, actor, home)
        user = User(
            user_id=user_id,
            email=email,
            display_name=display_name,
            password_hash=password_hash,
            actor_id=actor,
            workspace_id=home,
        )
        return user, address

    def login(self, email: str, password: str, totp_code: str | None, client: str = "") -> Grant:
        try:
            email = passwords.normalise_email(email)
        except ValidationFailed:
            raise Unauthenticated("wrong email or password") from None
        address = self.store.find(Address, address_id(email))
        user = (
            self.store.find(User, UUID(address.user_id))
            if address is not None and address.user_id
            else None
        )
        if user is None:
            passwords.verify_password(password, self._dummy_hash)
            raise Unauthenticated("wrong email or password")
        if not passwords.verify_password(password, user.password_hash):
            # Recorded off the caller's path: answering a wrong password for an account must
            # take as long as for an unknown email, or timing tells which emails exist.
            self._background.submit(self._record_failure, user.id, "password", client)
            raise Unauthenticated("wrong email or password")
        step = 0
        if user.totp_enabled:
            if not totp_code:
                raise Unauthenticated("enter the code of your authenticator app", totpRequired=True)
            step = _totp_step(user.totp_secret, totp_code)
            if step <= user.last_totp_step:
                self._background.submit(self._record_failure, user.id, "totp", client)
                raise Unauthenticated("the two-factor code is not valid", totpRequired=True)

        def attempt() -> Grant:
            fresh = self.store.get(User, user.id)
            if step and step <= fresh.last_totp_step:  # raced with its twin
                raise Unauthenticated("the two-factor code was used already", totpRequired=True)
            workspace_id = fresh.sign_in_workspace()
            if workspace_id is None:
                raise Forbidden("your account belongs to no workspace; ask to be invited")
            workspace = self.store.get(Workspace, UUID(workspace_id))
            fresh.login_succeeded("password", client, str(fresh.id), workspace_id, step)
            session, token = self._start_session(str(fresh.id), workspace_id)
            self.store.save(fresh, session)
            return self._grant(fresh, workspace, session, token)

        return _retrying(attempt)

    def _record_failure(self, user_id: UUID, reason: str, client: str) -> None:
        def attempt() -> None:
            user = self.store.get(User, user_id)
            # Only a workspace the user still belongs to sees the attempt in its audit log.
            user.login_failed(reason, client, str(user_id), user.sign_in_workspace() or "")
            self.store.save(user)

        try:
            _retrying(attempt)
        except Conflict:  # a storm of failures on one account: the throttle has the count
            log.warning("could not record a failed sign-in of %s", user_id)

    def change_password(
        self, user_id: str, workspace_id: str, current: str, new: str
    ) -> tuple[Grant, list[MembershipChange]]:
        """Every other session of the user ends; the caller gets a fresh one."""
        user = self.store.get(User, UUID(user_id))
        if not passwords.verify_password(current, user.password_hash):
            raise Unauthenticated("the current password is wrong")
        passwords.check_strength(new, user.email, user.display_name)
        if passwords.verify_password(new, user.password_hash):
            raise ValidationFailed("the new password is the current one", field="newPassword")
        hashed = passwords.hash_password(new, self._cost)

        def attempt() -> tuple[Grant, list[MembershipChange]]:
            fresh = self.store.get(User, UUID(user_id))
            workspace = self._workspace_of(user_id, workspace_id)
            fresh.password_changed(hashed, time.time(), user_id, workspace_id)
            session, token = self._start_session(user_id, workspace_id)
            self.store.save(fresh, session)
            changes = [MembershipChange(w, user_id) for w in fresh.workspaces]
            return self._grant(fresh, workspace, session, token), changes

        return _retrying(attempt)

    # -- sessions ---------------------------------------------------------------------------

    def _start_session(self, user_id: str, workspace_id: str) -> tuple[Session, str]:
        secret = secrets.token_urlsafe(32)
        session = Session(
            session_id=uuid4(),
            user_id=user_id,
            token_hash=passwords.token_hash(secret),
            expires_at=time.time() + self._refresh_ttl_s,
            actor_id=user_id,
            workspace_id=workspace_id,
        )
        return session, f"{session.id}.{secret}"

    def refresh(self, refresh_token: str) -> Grant:
        """Rotate a refresh token. A rotated one presented again revokes its whole family."""
        session_id, secret = _split_token(refresh_token)

        def attempt() -> Grant:
            session = self.store.find(Session, session_id)
            if session is None or session.revoked:
                raise Unauthenticated("the session has ended; sign in again")
            presented = passwords.token_hash(secret)
            if presented != session.token_hash:
                if presented in session.previous:
                    session.revoked_("reuse", session.user_id, session.workspace_id)
                    self.store.save(session)
                    raise Unauthenticated(
                        "this refresh token was used before: the session is revoked; sign in again",
                        sessionRevoked=True,
                    )
                raise Unauthenticated("the refresh token is not valid")
            if session.expires_at < time.time():
                raise Unauthenticated("the session has expired; sign in again")
            user = self.store.get(User, UUID(session.user_id))
            workspace = self.store.get(Workspace, UUID(session.workspace_id))
            if workspace.role_of(session.user_id) is None or (
                session.created_on.timestamp() < user.credentials_since()
            ):
                session.revoked_("access-changed", session.user_id, session.workspace_id)
                self.store.save(session)
                raise Unauthenticated("the session has ended; sign in again", sessionRevoked=True)
            new_secret = secrets.token_urlsafe(32)
            session.refreshed(
                passwords.token_hash(new_secret),
                time.time() + self._refresh_ttl_s,
                session.user_id,
                session.workspace_id,
            )
            self.store.save(session)
            return self._grant(user, workspace, session, f"{session.id}.{new_secret}")

        return _retrying(attempt)

    def logout(self, refresh_token: str, user_id: str) -> str:
        """End the session of a refresh token; returns its id."""
        session_id, secret = _split_token(refresh_token)

        def attempt() -> str:
            session = self.store.find(Session, session_id)
            if session is None or session.user_id != user_id:
                raise Unauthenticated("the refresh token is not valid")
            hashed = passwords.token_hash(secret)
            if hashed != session.token_hash and hashed not in session.previous:
                raise Unauthenticated("the refresh token is not valid")
            if not session.revoked:
                session.revoked_("logout", user_id, session.workspace_id)
                self.store.save(session)
            return str(session.id)

        return _retrying(attempt)

    def switch_workspace(self, user_id: str, workspace_id: str) -> Grant:
        target = _parse_uuid(workspace_id)

        def attempt() -> Grant:
            workspace = self.store.find(Workspace, target) if target else None
            if workspace is None or workspace.role_of(user_id) is None:
                raise NotFound(f"workspace {workspace_id} does not exist")
            user = self.store.get(User, UUID(user_id))
            user.login_succeeded("switch", "", user_id, workspace.workspace_id)
            session, token = self._start_session(user_id, workspace.workspace_id)
            self.store.save(user, session)
            return self._grant(user, workspace, session, token)

        return _retrying(attempt)

    def _grant(self, user: User, workspace: Workspace, session: Session, token: str) -> Grant:
        role = workspace.role_of(str(user.id))
        assert role is not None
        return Grant(
            user_id=str(user.id),
            email=user.email,
            display_name=user.display_name,
            workspace_id=workspace.workspace_id,
            workspace_name=workspace.name,
            role=role,
            session_id=str(session.id),
            refresh_token=token,
            refresh_expires_at=session.expires_at,
        )

    # -- members ----------------------------------------------------------------------------

    def invite(self, actor_id: str, workspace_id: str, email: str, role: str) -> tuple[str, str]:
        """A pending membership for `email`; returns its member id and the invitation token
        the inviter hands to the invitee, who takes it up with `accept_invitation`. Nothing
        happens to an account until its holder presents the token, so an invitation neither
        reveals whether the address has an account nor adds anyone without consent."""
        email = passwords.normalise_email(email)
        check_role(role)
        secret = secrets.token_urlsafe(32)

        def attempt() -> str:
            workspace = self._managed(actor_id, workspace_id, role)
            member_id = workspace.invite(email, role, passwords.token_hash(secret), actor_id)
            self.store.save(workspace)
            return member_id

        return _retrying(attempt), f"{workspace_id}.{secret}"

    def accept_invitation(self, user_id: str, token: str) -> Grant:
        """Join the workspace of an invitation made out to this account's email address."""
        try:
            workspace_id, secret = _split_token(token)
        except Unauthenticated:
            raise NotFound("no such invitation for your account") from None

        def attempt() -> Grant:
            workspace = self.store.find(Workspace, workspace_id)
            user = self.store.get(User, UUID(user_id))
            member_id = (
                workspace.invitation(passwords.token_hash(secret), user.email)
                if workspace is not None
                else None
            )
            if workspace is None or member_id is None:
                raise NotFound("no such invitation for your account")
            role = workspace.members[member_id]["role"]
            workspace.invitation_accepted(
                member_id, user_id, user.display_name, user_id, workspace.workspace_id
            )
            user.joined(role, user_id, workspace.workspace_id)
            user.login_succeeded("invitation", "", user_id, workspace.workspace_id)
            session, refresh = self._start_session(user_id, workspace.workspace_id)
            self.store.save(workspace, user, session)
            return self._grant(user, workspace, session, refresh)

        return _retrying(attempt)

    def change_role(
        self, actor_id: str, workspace_id: str, member_id: str, role: str
    ) -> MembershipChange:
        def attempt() -> MembershipChange:
            workspace = self._managed(actor_id, workspace_id, role)
            actor_role = workspace.role_of(actor_id) or ""
            workspace.change_role(member_id, role, actor_id, actor_role)
            self.store.save(workspace)
            return MembershipChange(workspace_id, workspace.members[member_id]["user_id"])

        return _retrying(attempt)

    def remove_member(self, actor_id: str, workspace_id: str, member_id: str) -> MembershipChange:
        def attempt() -> MembershipChange:
            workspace = self._workspace_of(actor_id, workspace_id)
            actor_role = workspace.role_of(actor_id) or ""
            removed = workspace.remove(member_id, actor_id, actor_role)
            changed: list[Aggregate] = [workspace]
            if removed["user_id"]:
                user = self.store.get(User, UUID(removed["user_id"]))
                user.left(actor_id, workspace_id)
                changed.append(user)
            self.store.save(*changed)
            return MembershipChange(workspace_id, removed["user_id"])

        return _retrying(attempt)

    def _workspace_of(self, actor_id: str, workspace_id: str) -> Workspace:
        workspace = self.store.find(Workspace, UUID(workspace_id))
        if workspace is None or workspace.role_of(actor_id) is None:
            raise NotFound(f"workspace {workspace_id} does not exist")
        return workspace

    def _managed(self, actor_id: str, workspace_id: str, role: str) -> Workspace:
        """The workspace, if the actor may give `role` in it (the store's role, not the
        token's, decides)."""
        workspace = self._workspace_of(actor_id, workspace_id)
        actor_role = workspace.role_of(actor_id) or ""
        if rank(actor_role) < rank("admin"):
            raise Forbidden("managing members takes the admin role")
        if role == "owner" and actor_role != "owner":
            raise Forbidden("only an owner can make someone owner")
        return workspace

    # -- two-factor -------------------------------------------------------------------------

    def enable_totp(self, user_id: str, workspace_id: str, password: str) -> str:
        """Start enabling two-factor: returns the provisioning URI for an authenticator app.
        It takes effect once `confirm_totp` sees a valid code. Takes the password, so a
        stolen access token cannot lock the owner out with the thief's authenticator."""
        secret = pyotp.random_base32()
        if not passwords.verify_password(
            password, self.store.get(User, UUID(user_id)).password_hash
        ):
            raise Unauthenticated("the password is wrong")

        def attempt() -> str:
            user = self.store.get(User, UUID(user_id))
            if user.totp_enabled:
                raise Conflict("two-factor sign-in is on already", current_version=user.version)
            user.totp_requested(secret, user_id, workspace_id)
            self.store.save(user)
            return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)

        return _retrying(attempt)

    def confirm_totp(self, user_id: str, workspace_id: str, code: str) -> None:
        def attempt() -> None:
            user = self.store.get(User, UUID(user_id))
            if user.totp_secret is None or user.totp_enabled:
                raise ValidationFailed("call enableTotp first", field="code")
            if not _totp_ok(user.totp_secret, code):
                raise ValidationFailed("the code is not valid", field="code")
            user.totp_enabled_(user_id, workspace_id)
            self.store.save(user)

        _retrying(attempt)

    def disable_totp(self, user_id: str, workspace_id: str, code: str) -> None:
        def attempt() -> None:
            user = self.store.get(User, UUID(user_id))
            if not user.totp_enabled:
                raise ValidationFailed("two-factor sign-in is off", field="code")
            if not _totp_ok(user.totp_secret, code):
                raise ValidationFailed("the code is not valid", field="code")
            user.totp_disabled(user_id, workspace_id)
            self.store.save(user)

        _retrying(attempt)


def _totp_step(secret: str | None, code: str) -> int:
    """The time step whose code this is, 0 when none: one step either side of now forgives
    a clock a little off."""
    if secret is None:
        return 0
    totp, now = pyotp.TOTP(secret), time.time()
    for offset in (0, -1, 1):
        at = now + offset * totp.interval
        if secrets.compare_digest(totp.at(at), code.strip()):
            return totp.timecode(datetime.fromtimestamp(at, tz=UTC))
    return 0


def _totp_ok(secret: str | None, code: str) -> bool:
    return _totp_step(secret, code) > 0


def _split_token(token: str) -> tuple[UUID, str]:
    session, _, secret = token.partition(".")
    parsed = _parse_uuid(session)
    if parsed is None or not secret:
        raise Unauthenticated("the refresh token is not valid")
    return parsed, secret


def _parse_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def _retrying(attempt: Callable[[], T]) -> T:
    """Run a load-change-save attempt again on fresh state when a racing writer won."""
    for _ in range(RETRIES):
        try:
            return attempt()
        except IntegrityError:
            continue
    raise Conflict("too many concurrent changes to the same account; retry", current_version=0)
