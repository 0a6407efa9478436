"""Row-level security on the `read` schema: the api's reader role sees one workspace's rows
even when a query forgets its WHERE clause, and cannot write."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from projections.applier import ensure_read_models
from projections.registry import PROJECTIONS
from projections.schema import READER_ROLE


def test_the_reader_sees_only_the_workspace_its_transaction_names(database_url: str) -> None:
    asyncio.run(ensure_read_models(database_url))
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(database_url) as conn:
        for ws in (a, b):
            conn.execute(
                "INSERT INTO read.workflows (id, workspace_id, name, version, created_at,"
                " created_by, updated_at, updated_by) VALUES (%s, %s, 'w', 1, now(), 'x', now(),"
                " 'x')",
                (uuid.uuid4(), ws),
            )
            conn.execute(
                "INSERT INTO read.workspace_members VALUES (%s, 'u-' || %s, 'u-' || %s,"
                " 'e', 'd', 'owner', 'active', now())",
                (ws, ws, ws),
            )
        conn.commit()
        conn.autocommit = True  # as the api's connections: each transaction a real one
        conn.execute(f"SET ROLE {READER_ROLE}")
        for ws in (a, b):
            with conn.transaction():
                conn.execute("SELECT set_config('autoops.workspace_id', %s, true)", (ws,))
                seen = conn.execute("SELECT workspace_id FROM read.workflows").fetchall()
                assert seen == [(ws,)]
                members = conn.execute("SELECT workspace_id FROM read.workspace_members")
                assert members.fetchall() == [(ws,)]
        with conn.transaction():  # no workspace named: nothing at all
            assert conn.execute("SELECT count(*) FROM read.workflows").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("DELETE FROM read.workflows")


def test_every_read_model_table_has_row_security(database_url: str) -> None:
    asyncio.run(ensure_read_models(database_url))
    tables = [t for p in PROJECTIONS.values() for t in p.tables]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT 'read.' || relname FROM pg_class c JOIN pg_namespace n ON n.oid ="
            " c.relnamespace WHERE nspname = 'read' AND relkind = 'r' AND relrowsecurity"
        ).fetchall()
    assert sorted(tables) == sorted(r[0] for r in rows if r[0] != "read.projection_tracking")
