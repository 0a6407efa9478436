"""Account mutations: sign-up, sign-in, token refresh, sign-out, password and two-factor, and
workspace membership."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from command_side.errors import Unauthenticated, ValidationFailed
from command_side.identity import Grant
from command_side.identity.passwords import normalise_email
from web.auth import SECURED
from web.graphql.context import caller, client_address, services
from web.graphql.errors import graphql_error, mapped_errors
from web.graphql.identity_types import (
    AuthPayload,
    MemberPayload,
    Role,
    TotpSetup,
    UserInfo,
    WorkspaceInfo,
)

T = TypeVar("T")


@strawberry.input
class RegisterInput:
    email: str
    password: str
    display_name: str
    workspace_name: str


@strawberry.input
class LoginInput:
    email: str
    password: str
    totp_code: str | None = None


@strawberry.input
class RefreshTokenInput:
    refresh_token: str


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.input
class EnableTotpInput:
    password: str = strawberry.field(description="Your current password.")


@strawberry.input
class TotpCodeInput:
    code: str


@strawberry.input
class InviteMemberInput:
    email: str
    role: Role


@strawberry.input
class AcceptInvitationInput:
    token: str


@strawberry.input
class ChangeMemberRoleInput:
    member_id: strawberry.ID
    role: Role


@strawberry.input
class RemoveMemberInput:
    member_id: strawberry.ID


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """Identity use cases are synchronous (and bcrypt is slow): run them off the loop."""
    with mapped_errors():
        return await asyncio.to_thread(fn, *args)


async def _guarded(info: Info[Any, Any], account: str, fn: Callable[..., T], *args: Any) -> T:
    """A use case that checks a password or a code, throttled per account and address: the
    attempt counts unless it succeeds or fails for another reason than a wrong secret."""
    throttle, address = services(info).throttle, client_address(info)
    with mapped_errors():
        await throttle.reserve(account, address)
    try:
        result = await _call(fn, *args)
    except GraphQLError as exc:
        code = (exc.extensions or {}).get("code")
        wrong_secret = code == "UNAUTHENTICATED" and not (exc.extensions or {}).get("totpRequired")
        if not wrong_secret and (exc.extensions or {}).get("field") != "code":
            await throttle.release(account, address)
        raise
    await throttle.succeeded(account, address)
    return result


def _signed_in(info: Info[Any, Any], grant: Grant) -> AuthPayload:
    tokens = services(info).tokens
    return AuthPayload(
        access_token=tokens.issue(grant.user_id, grant.workspace_id, grant.role, grant.session_id),
        refresh_token=grant.refresh_token,
        expires_in=tokens.ttl_s,
        user=UserInfo(
            id=strawberry.ID(grant.user_id), email=grant.email, display_name=grant.display_name
        ),
        workspace=WorkspaceInfo(
            id=strawberry.ID(grant.workspace_id), name=grant.workspace_name, role=Role(grant.role)
        ),
    )


@strawberry.type
class AccountMutation:
    @strawberry.mutation(permission_classes=SECURED)
    async def register(self, info: Info[Any, Any], input: RegisterInput) -> AuthPayload:
        svc = services(info)
        if not svc.settings.allow_signup:
            raise graphql_error("FORBIDDEN", "sign-up is closed; ask an operator for an account")
        grant = await _call(
            svc.identity.register,
            input.email,
            input.password,
            input.display_name,
            input.workspace_name,
            client_address(info),
        )
        return _signed_in(info, grant)

    @strawberry.mutation(permission_classes=SECURED)
    async def login(self, info: Info[Any, Any], input: LoginInput) -> AuthPayload:
        svc = services(info)
        try:
            account = normalise_email(input.email)
        except ValidationFailed:
            account = input.email.strip().lower()
        grant = await _guarded(
            info,
            account,
            svc.identity.login,
            input.email,
            input.password,
            input.totp_code,
            client_address(info),
        )
        return _signed_in(info, grant)

    @strawberry.mutation(permission_classes=SECURED)
    async def refresh_token(self, info: Info[Any, Any], input: RefreshTokenInput) -> AuthPayload:
        svc = services(info)
        try:
            grant = await asyncio.to_thread(svc.identity.refresh, input.refresh_token)
        except Unauthenticated as exc:
            if exc.details.get("sessionRevoked"):
                await svc.revocations.session_ended(input.refresh_token.partition(".")[0])
            with mapped_errors():
                raise
        return _signed_in(info, grant)

    @strawberry.mutation(
        permission_classes=SECURED, description="End the session of this refresh token."
    )
    async def logout(self, info: Info[Any, Any], input: RefreshTokenInput) -> bool:
        who, svc = caller(info), services(info)
        session_id = await _call(svc.identity.logout, input.refresh_token, who.actor_id)
        await svc.revocations.session_ended(session_id)
        return True

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Every other session ends; the answer holds a fresh token pair.",
    )
    async def change_password(
        self, info: Info[Any, Any], input: ChangePasswordInput
    ) -> AuthPayload:
        who, svc = caller(info), services(info)
        grant, _ = await _guarded(
            info,
            f"user:{who.actor_id}",
            svc.identity.change_password,
            who.actor_id,
            who.workspace_id,
            input.current_password,
            input.new_password,
        )
        await svc.revocations.credentials_changed(who.actor_id)
        return _signed_in(info, grant)

    @strawberry.mutation(
        permission_classes=SECURED, description="A token pair for another workspace of yours."
    )
    async def switch_workspace(
        self, info: Info[Any, Any], workspace_id: strawberry.ID
    ) -> AuthPayload:
        who, svc = caller(info), services(info)
        grant = await _call(svc.identity.switch_workspace, who.actor_id, str(workspace_id))
        return _signed_in(info, grant)

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Start two-factor sign-in; it is on once confirmTotp sees a valid code.",
    )
    async def enable_totp(self, info: Info[Any, Any], input: EnableTotpInput) -> TotpSetup:
        who, svc = caller(info), services(info)
        uri = await _guarded(
            info,
            f"user:{who.actor_id}",
            svc.identity.enable_totp,
            who.actor_id,
            who.workspace_id,
            input.password,
        )
        return TotpSetup(provisioning_uri=uri)

    @strawberry.mutation(permission_classes=SECURED)
    async def confirm_totp(self, info: Info[Any, Any], input: TotpCodeInput) -> bool:
        who, svc = caller(info), services(info)
        await _guarded(
            info,
            f"user:{who.actor_id}",
            svc.identity.confirm_totp,
            who.actor_id,
            who.workspace_id,
            input.code,
        )
        return True

    @strawberry.mutation(permission_classes=SECURED)
    async def disable_totp(self, info: Info[Any, Any], input: TotpCodeInput) -> bool:
        who, svc = caller(info), services(info)
        await _guarded(
            info,
            f"user:{who.actor_id}",
            svc.identity.disable_totp,
            who.actor_id,
            who.workspace_id,
            input.code,
        )
        return True

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Invite an address to your workspace. Hand the invitation token to the "
        "invitee: they join by calling acceptInvitation with it, signed in with that address.",
    )
    async def invite_member(self, info: Info[Any, Any], input: InviteMemberInput) -> MemberPayload:
        who, svc = caller(info), services(info)
        member_id, token = await _call(
            svc.identity.invite, who.actor_id, who.workspace_id, input.email, input.role.value
        )
        return MemberPayload(
            member_id=strawberry.ID(member_id), role=input.role, invitation_token=token
        )

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Join the workspace of an invitation made out to your email address; "
        "answers with a token pair for that workspace.",
    )
    async def accept_invitation(
        self, info: Info[Any, Any], input: AcceptInvitationInput
    ) -> AuthPayload:
        who, svc = caller(info), services(info)
        grant = await _call(svc.identity.accept_invitation, who.actor_id, input.token)
        return _signed_in(info, grant)

    @strawberry.mutation(permission_classes=SECURED)
    async def change_member_role(
        self, info: Info[Any, Any], input: ChangeMemberRoleInput
    ) -> MemberPayload:
        who, svc = caller(info), services(info)
        change = await _call(
            svc.identity.change_role,
            who.actor_id,
            who.workspace_id,
            str(input.member_id),
            input.role.value,
        )
        if change.user_id:
            await svc.revocations.access_changed(change.workspace_id, change.user_id)
        return MemberPayload(member_id=input.member_id, role=input.role)

    @strawberry.mutation(
        permission_classes=SECURED,
        description="Remove a member or an invitation (admins), or leave (anyone).",
    )
    async def remove_member(self, info: Info[Any, Any], input: RemoveMemberInput) -> MemberPayload:
        who, svc = caller(info), services(info)
        change = await _call(
            svc.identity.remove_member, who.actor_id, who.workspace_id, str(input.member_id)
        )
        if change.user_id:
            await svc.revocations.access_changed(change.workspace_id, change.user_id)
        return MemberPayload(member_id=input.member_id)
