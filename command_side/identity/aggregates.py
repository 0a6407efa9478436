"""Aggregates of the identity context: users, the addresses they sign in with, workspaces with
their members, and sign-in sessions (refresh-token families).

Public methods check invariants and raise typed errors; the private `@event` methods only
change state. Secrets (password hashes, TOTP secrets, token hashes) live in the stored events
but never in the public envelopes (see `command_side.contracts.envelope`).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from command_side.errors import Conflict, Forbidden, NotFound, ValidationFailed

ROLES = ("viewer", "editor", "admin", "owner")
ADDRESS_NAMESPACE = uuid5(NAMESPACE_URL, "https://autoops.dev/address")
#: Rotated refresh-token hashes a session remembers, to recognise a stolen one replayed.
MAX_PREVIOUS_TOKENS = 1000


def rank(role: str) -> int:
    """Higher is mightier; unknown roles rank below viewer."""
    return ROLES.index(role) if role in ROLES else -1


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def address_id(email: str) -> UUID:
    """One aggregate per normalised email address: what makes emails unique."""
    return uuid5(ADDRESS_NAMESPACE, email)


class Address(Aggregate):
    """An email address and the account that claimed it: what makes emails unique."""

    @staticmethod
    def create_id(email: str, **_: Any) -> UUID:
        return address_id(email)

    @event("AddressNoted")
    def __init__(self, email: str, actor_id: str, workspace_id: str) -> None:
        self.email = email
        self.user_id: str | None = None

    def claim(self, user_id: str, actor_id: str, workspace_id: str) -> None:
        if self.user_id is not None:
            raise Conflict(
                f"an account with {self.email} exists already", current_version=0, field="email"
            )
        self._claimed(user_id, actor_id, workspace_id)

    @event("AddressClaimed")
    def _claimed(self, user_id: str, actor_id: str, workspace_id: str) -> None:
        self.user_id = user_id


class User(Aggregate):
    """A person who signs in. Belongs to workspaces through their Workspace's members."""

    @staticmethod
    def create_id(user_id: UUID, **_: Any) -> UUID:
        return user_id

    @event("UserRegistered")
    def __init__(
        self,
        user_id: UUID,
        email: str,
        display_name: str,
        password_hash: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.email = email
        self.display_name = display_name
        self.password_hash = password_hash
        self.totp_secret: str | None = None
        self.totp_enabled = False
        self.workspaces: list[str] = []
        self.last_workspace: str | None = None
        self.credentials_changed_at = 0.0
        self.last_totp_step = 0

    @event("PasswordChanged")
    def password_changed(
        self, password_hash: str, at: float, actor_id: str, workspace_id: str
    ) -> None:
        self.password_hash = password_hash
        self.credentials_changed_at = at

    def credentials_since(self) -> float:
        """Sessions started before this (epoch seconds) are no longer valid."""
        return self.credentials_changed_at

    @event("JoinedWorkspace")
    def joined(self, role: str, actor_id: str, workspace_id: str) -> None:
        if workspace_id not in self.workspaces:
            self.workspaces.append(workspace_id)

    @event("LeftWorkspace")
    def left(self, actor_id: str, workspace_id: str) -> None:
        if workspace_id in self.workspaces:
            self.workspaces.remove(workspace_id)

    @event("TotpRequested")
    def totp_requested(self, totp_secret: str, actor_id: str, workspace_id: str) -> None:
        self.totp_secret = totp_secret
        self.totp_enabled = False

    @event("TotpEnabled")
    def totp_enabled_(self, actor_id: str, workspace_id: str) -> None:
        self.totp_enabled = True

    @event("TotpDisabled")
    def totp_disabled(self, actor_id: str, workspace_id: str) -> None:
        self.totp_secret = None
        self.totp_enabled = False

    @event("LoginSucceeded")
    def login_succeeded(
        self,
        method: str,
        client_address: str,
        actor_id: str,
        workspace_id: str,
        totp_step: int = 0,
    ) -> None:
        self.last_workspace = workspace_id
        # A code signs in once: a later sign-in needs the code of a later time step.
        self.last_totp_step = max(self.last_totp_step, totp_step)

    @event("LoginFailed")
    def login_failed(
        self, reason: str, client_address: str, actor_id: str, workspace_id: str
    ) -> None:
        pass

    def sign_in_workspace(self) -> str | None:
        """Where a login lands: the last workspace used, else the first joined."""
        if self.last_workspace in self.workspaces:
            return self.last_workspace
        return self.workspaces[0] if self.workspaces else None


class Workspace(Aggregate):
    """A tenant. Members are keyed by user id; a pending invitation by its address id."""

    @staticmethod
    def create_id(workspace_id: UUID, **_: Any) -> UUID:
        return workspace_id

    @event("WorkspaceCreated")
    def __init__(self, workspace_id: UUID, name: str, actor_id: str) -> None:
        self.workspace_id = str(workspace_id)
        self.name = name
        self.members: dict[str, dict[str, Any]] = {}

    def role_of(self, user_id: str) -> str | None:
        member = self.members.get(user_id)
        return member["role"] if member and member["status"] == "active" else None

    def member(self, member_id: str) -> dict[str, Any]:
        try:
            return self.members[member_id]
        except KeyError:
            raise NotFound(f"member {member_id} does not exist", member_id=member_id) from None

    def owners(self) -> list[str]:
        """Active owners: an invitation to own the workspace does not keep it owned."""
        return [
            k for k, m in self.members.items() if m["role"] == "owner" and m["status"] == "active"
        ]

    # -- membership -----------------------------------------------------------------------

    def add(self, user_id: str, email: str, display_name: str, role: str, actor_id: str) -> None:
        if user_id in self.members:
            raise ValidationFailed(f"{email} is a member already", field="email")
        self._member_added(
            user_id, email, display_name, check_role(role), actor_id, self.workspace_id
        )

    @event("MemberAdded")
    def _member_added(
        self,
        user_id: str,
        email: str,
        display_name: str,
        role: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.members[user_id] = {
            "user_id": user_id,
            "email": email,
            "display_name": display_name,
            "role": role,
            "status": "active",
        }

    def invite(self, email: str, role: str, token_hash: str, actor_id: str) -> str:
        """A pending membership of `email`, taken up with the invitation's token. Inviting
        the address again replaces its token and role."""
        member_id = str(address_id(email))
        if any(m["email"] == email and m["status"] == "active" for m in self.members.values()):
            raise ValidationFailed(f"{email} is a member already", field="email")
        self._member_invited(
            member_id, email, check_role(role), token_hash, actor_id, self.workspace_id
        )
        return member_id

    @event("MemberInvited")
    def _member_invited(
        self,
        member_id: str,
        email: str,
        role: str,
        token_hash: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.members[member_id] = {
            "user_id": None,
            "email": email,
            "display_name": "",
            "role": role,
            "status": "invited",
            "token_hash": token_hash,
        }

    def invitation(self, token_hash: str, email: str) -> str | None:
        """The pending member that this token invites, if it invites `email`."""
        for member_id, m in self.members.items():
            if m["status"] == "invited" and m.get("token_hash") == token_hash:
                return member_id if m["email"] == email else None
        return None

    @event("InvitationAccepted")
    def invitation_accepted(
        self, member_id: str, user_id: str, display_name: str, actor_id: str, workspace_id: str
    ) -> None:
        invited = self.members.pop(member_id)
        invited.pop("token_hash", None)
        self.members[user_id] = {
            **invited,
            "user_id": user_id,
            "display_name": display_name,
            "status": "active",
        }

    def change_role(self, member_id: str, role: str, actor_id: str, actor_role: str) -> None:
        member = self.member(member_id)
        check_role(role)
        self._may_manage(member, role, actor_role)
        if member["role"] == role:
            return
        if member["role"] == "owner" and self.owners() == [member_id]:
            raise Forbidden("the last owner cannot be demoted; make someone else owner first")
        self._role_changed(member_id, role, member["role"], actor_id, self.workspace_id)

    @event("MemberRoleChanged")
    def _role_changed(
        self, member_id: str, role: str, previous: str, actor_id: str, workspace_id: str
    ) -> None:
        self.members[member_id]["role"] = role

    def remove(self, member_id: str, actor_id: str, actor_role: str) -> dict[str, Any]:
        member = self.member(member_id)
        if member_id != actor_id:  # anyone may leave; removing others takes rank
            self._may_manage(member, member["role"], actor_role)
        if member["role"] == "owner" and self.owners() == [member_id]:
            raise Forbidden("the last owner cannot be removed; make someone else owner first")
        self._member_removed(member_id, member["email"], actor_id, self.workspace_id)
        return member

    @event("MemberRemoved")
    def _member_removed(self, member_id: str, email: str, actor_id: str, workspace_id: str) -> None:
        del self.members[member_id]

    @staticmethod
    def _may_manage(member: dict[str, Any], new_role: str, actor_role: str) -> None:
        """Admins manage editors and viewers; only owners touch owners or make owners."""
        if actor_role == "owner":
            return
        if rank(actor_role) < rank("admin"):
            raise Forbidden("managing members takes the admin role")
        if "owner" in (member["role"], new_role):
            raise Forbidden("only an owner can make or change an owner")


class Session(Aggregate):
    """One sign-in: a family of refresh tokens, each used once. A rotated token presented
    again means it was stolen: the whole family is revoked."""

    @staticmethod
    def create_id(session_id: UUID, **_: Any) -> UUID:
        return session_id

    @event("SessionStarted")
    def __init__(
        self,
        session_id: UUID,
        user_id: str,
        token_hash: str,
        expires_at: float,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.token_hash = token_hash
        self.expires_at = expires_at
        self.previous: list[str] = []
        self.revoked: str | None = None

    @event("SessionRefreshed")
    def refreshed(
        self, token_hash: str, expires_at: float, actor_id: str, workspace_id: str
    ) -> None:
        self.previous.append(self.token_hash)
        del self.previous[:-MAX_PREVIOUS_TOKENS]
        self.token_hash = token_hash
        self.expires_at = expires_at

    @event("SessionRevoked")
    def revoked_(self, reason: str, actor_id: str, workspace_id: str) -> None:
        self.revoked = reason
