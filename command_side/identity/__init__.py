"""The identity context: users, workspaces with roles, sessions and two-factor sign-in."""

from command_side.identity.aggregates import ROLES, Address, Session, User, Workspace, rank
from command_side.identity.service import Grant, IdentityService, MembershipChange
from command_side.identity.store import IdentityStore

__all__ = [
    "ROLES",
    "Address",
    "Grant",
    "IdentityService",
    "IdentityStore",
    "MembershipChange",
    "Session",
    "User",
    "Workspace",
    "rank",
]
