"""Row-level security on the `read` schema: the api's reader role sees one workspace's rows
even when a query forgets its WHERE clause, and cannot write."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from projections.applier import ReadModelSetupError, ensure_read_models
from projections.registry import PROJECTIONS
from projections.schema import READER_ROLE, READER_ROLE_DDL
from tests.services import fresh_database


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


def test_a_database_user_without_createrole_is_told_what_an_administrator_must_run(
    pg_admin_url: str,
) -> None:
    user = f"autoops_limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {user} LOGIN")
    try:
        with fresh_database(pg_admin_url) as url:
            with psycopg.connect(url, autocommit=True) as admin:
                dbname = conninfo_to_dict(url)["dbname"]
                admin.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO {user}')
                admin.execute(f"GRANT CREATE ON SCHEMA public TO {user}")
            limited = make_conninfo(url, user=user)
            with pytest.raises(ReadModelSetupError, match=f"GRANT {READER_ROLE} TO"):
                asyncio.run(ensure_read_models(limited))
            with psycopg.connect(pg_admin_url, autocommit=True) as admin:
                for ddl in READER_ROLE_DDL[:1]:  # what the message asks an administrator to run
                    admin.execute(ddl)
                admin.execute(f"GRANT {READER_ROLE} TO {user}")
            asyncio.run(ensure_read_models(limited))  # what the message said was enough
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"DROP OWNED BY {user}")
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {user}")
