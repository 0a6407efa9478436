"""Who may call what: one table maps every root field to the least role allowed, enforced by
one permission class on every field (subscriptions included). A field missing from the table
is refused: new fields are closed until someone decides who may use them."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError
from strawberry.permission import BasePermission
from strawberry.types import Info

from command_side.identity import rank
from web.auth.tokens import InvalidToken, Principal

PUBLIC = "public"
#: Root field (`Type.fieldName`) → least role allowed, or PUBLIC.
PERMISSIONS: dict[str, str] = {
    # accounts
    "Mutation.register": PUBLIC,
    "Mutation.login": PUBLIC,
    "Mutation.refreshToken": PUBLIC,
    "Mutation.logout": "viewer",
    "Mutation.changePassword": "viewer",
    "Mutation.switchWorkspace": "viewer",
    "Mutation.enableTotp": "viewer",
    "Mutation.confirmTotp": "viewer",
    "Mutation.disableTotp": "viewer",
    "Query.me": "viewer",
    # workspaces and members
    "Query.workspaces": "viewer",
    "Query.members": "viewer",
    "Query.auditLog": "admin",
    "Mutation.inviteMember": "admin",
    "Mutation.acceptInvitation": "viewer",  # any signed-in account; the token decides
    "Mutation.changeMemberRole": "admin",
    "Mutation.removeMember": "viewer",  # anyone may leave; removing others takes admin
    # workflows
    "Query.workflows": "viewer",
    "Query.workflow": "viewer",
    "Query.workflowHistory": "viewer",
    "Query.nodeTypes": "viewer",
    "Query.validateWorkflow": "viewer",
    "Subscription.workflowEvents": "viewer",
    "Mutation.createWorkflow": "editor",
    "Mutation.renameWorkflow": "editor",
    "Mutation.changeWorkflowDescription": "editor",
    "Mutation.addNode": "editor",
    "Mutation.updateNode": "editor",
    "Mutation.moveNode": "editor",
    "Mutation.removeNode": "editor",
    "Mutation.connectNodes": "editor",
    "Mutation.disconnectNodes": "editor",
    "Mutation.publishWorkflow": "editor",
    "Mutation.lockNode": "editor",
    "Mutation.renewLock": "editor",
    "Mutation.unlockNode": "editor",
    "Mutation.breakLock": "admin",
    # Viewers review: they may comment, reply and resolve (docs: web/graphql/comments.py).
    "Mutation.addComment": "viewer",
    "Mutation.replyToComment": "viewer",
    "Mutation.editComment": "viewer",
    "Mutation.deleteComment": "viewer",
    "Mutation.resolveThread": "viewer",
    "Mutation.reopenThread": "viewer",
    "Query.comments": "viewer",
    "Subscription.presence": "viewer",
    "Mutation.updateCursor": "viewer",
    # executions
    "Query.executions": "viewer",
    "Query.execution": "viewer",
    "Query.artifact": "viewer",
    "Subscription.executionUpdates": "viewer",
    "Mutation.startExecution": "editor",
    "Mutation.cancelExecution": "editor",
    "Mutation.retryExecution": "editor",
    "Mutation.replayExecution": "editor",
    # credentials: names only are ever read back
    "Query.credentials": "editor",
    "Mutation.createCredential": "admin",
    "Mutation.deleteCredential": "admin",
    # variables: plain values every execution of the workspace reads
    "Query.variables": "viewer",
    "Mutation.setVariable": "editor",
    "Mutation.deleteVariable": "editor",
}


def unauthenticated(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "UNAUTHENTICATED"})


def bearer_token(context: dict[str, Any]) -> str | None:
    """The access token of an HTTP request's Authorization header, or of a websocket's
    `connection_params.Authorization`."""
    request = context.get("request")
    if request is not None:
        header = request.headers.get("authorization")
    else:
        header = (context.get("connection_params") or {}).get("Authorization")
    if not isinstance(header, str) or not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Authorization must be 'Bearer <access token>'")
    return token.strip()


async def authenticate(context: dict[str, Any]) -> Principal | None:
    """The caller, None when anonymous; a bad, expired or revoked token is UNAUTHENTICATED.

    An HTTP request is checked once. A websocket's context lives as long as the connection
    and carries queries and mutations as well as subscriptions: its token is checked again
    (expiry, revocation, changed access) for every operation."""
    if "principal" in context and context.get("request") is not None:
        return context["principal"]  # type: ignore[no-any-return]
    token = bearer_token(context)
    principal = None
    if token is not None:
        services = context["services"]
        try:
            principal = services.tokens.verify(token)
        except InvalidToken as exc:
            raise unauthenticated(str(exc)) from None
        reason = await services.revocations.check(principal)
        if reason is not None:
            raise unauthenticated(reason)
    context["principal"] = principal
    return principal


class Permitted(BasePermission):
    """Allows a root field to callers whose role ranks at least the table's entry."""

    message = "not allowed"

    async def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        root = info._raw_info.parent_type.name
        needed = PERMISSIONS.get(f"{root}.{info.field_name}")
        if needed is None:
            raise GraphQLError("this field is closed", extensions={"code": "FORBIDDEN"})
        if needed == PUBLIC:
            return True
        principal = await authenticate(info.context)
        if principal is None:
            raise unauthenticated("sign in to use this api (Authorization: Bearer <token>)")
        if rank(principal.role) < rank(needed):
            raise GraphQLError(
                f"this takes the {needed} role; you are {principal.role}",
                extensions={"code": "FORBIDDEN"},
            )
        return True


#: For `permission_classes=` on every root field.
SECURED: list[type[BasePermission]] = [Permitted]
