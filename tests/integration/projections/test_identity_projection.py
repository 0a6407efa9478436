"""The identity read models on real PostgreSQL: members and invitations as the aggregates
have them, exactly once under redelivery, and replay equal to the incremental build."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import psycopg

from command_side.contracts.log import EventLog
from command_side.identity import IdentityService, IdentityStore, Workspace
from infra.settings import eventsourcing_env_for
from projections.applier import Applier
from projections.replay import rebuild

PASSWORD = "violet-Harbour-lantern-42"


def _members(database_url: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT workspace_id, member_id, user_id, email, role, status"
            " FROM read.workspace_members"
        ).fetchall()
    return set(rows)


def test_members_read_model_matches_the_workspaces_and_replays_identically(
    database_url: str,
) -> None:
    env = eventsourcing_env_for(database_url)
    store = IdentityStore(env=env)
    svc = IdentityService(store, bcrypt_cost=4, refresh_ttl_s=60)
    owner = svc.register("owner@example.com", PASSWORD, "Owner", "Team")
    ws = owner.workspace_id
    ed = svc.register("ed@example.com", PASSWORD, "Ed", "Eds")
    svc.accept_invitation(ed.user_id, svc.invite(owner.user_id, ws, ed.email, "editor")[1])
    _, later_token = svc.invite(owner.user_id, ws, "later@example.com", "viewer")
    gone, _ = svc.invite(owner.user_id, ws, "gone@example.com", "viewer")
    svc.invite(owner.user_id, ws, "pending@example.com", "editor")
    svc.remove_member(owner.user_id, ws, gone)
    later = svc.register("later@example.com", PASSWORD, "Later", "Own")
    svc.accept_invitation(later.user_id, later_token)
    svc.change_role(owner.user_id, ws, later.user_id, "admin")

    log = EventLog(env, "identity")
    envelopes = [e for batch in log.read() for e in batch]
    log.close()

    async def fold_twice() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            applier = Applier(conn)
            await applier.setup()
            for i in range(0, len(envelopes), 3):  # in small batches, each delivered twice
                await applier.apply(envelopes[i : i + 3])
                await applier.apply(envelopes[max(0, i - 2) : i + 3])

    asyncio.run(fold_twice())
    expected = set()
    for workspace_id in {owner.workspace_id, later.workspace_id}:
        workspace = store.get(Workspace, UUID(workspace_id))
        for member_id, m in workspace.members.items():
            expected.add(
                (workspace_id, member_id, m["user_id"], m["email"], m["role"], m["status"])
            )
    ed_ws = {r for r in _members(database_url) if r[3] == "ed@example.com" and r[0] != ws}
    expected |= ed_ws  # Ed's own workspace
    assert _members(database_url) == expected
    assert ("later@example.com", "admin", "active") in {
        (r[3], r[4], r[5]) for r in expected if r[0] == ws
    }
    incremental = _members(database_url)
    asyncio.run(rebuild(database_url, env, ["identity"]))
    assert _members(database_url) == incremental
    svc.close()
