"""Tables of the `read` schema. Every row carries `workspace_id`; every projection's tables can
be dropped and rebuilt from the event store."""

from __future__ import annotations

SCHEMA = "CREATE SCHEMA IF NOT EXISTS read"

TRACKING = """
CREATE TABLE IF NOT EXISTS read.projection_tracking (
    projection text NOT NULL,
    aggregate_id uuid NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (projection, aggregate_id)
)
"""

WORKFLOWS = [
    """
    CREATE TABLE IF NOT EXISTS read.workflows (
        id uuid PRIMARY KEY,
        workspace_id text NOT NULL,
        name text NOT NULL,
        description text NOT NULL DEFAULT '',
        version integer NOT NULL,
        node_count integer NOT NULL DEFAULT 0,
        edge_count integer NOT NULL DEFAULT 0,
        published_version integer,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL,
        updated_at timestamptz NOT NULL,
        updated_by text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS workflows_by_workspace "
    "ON read.workflows (workspace_id, created_at, id)",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_nodes (
        workflow_id uuid NOT NULL,
        node_id text NOT NULL,
        workspace_id text NOT NULL,
        type text NOT NULL,
        name text NOT NULL,
        config jsonb NOT NULL,
        x double precision NOT NULL,
        y double precision NOT NULL,
        PRIMARY KEY (workflow_id, node_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_edges (
        workflow_id uuid NOT NULL,
        edge_id text NOT NULL,
        workspace_id text NOT NULL,
        source_id text NOT NULL,
        target_id text NOT NULL,
        label text,
        condition text,
        PRIMARY KEY (workflow_id, edge_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_locks (
        workflow_id uuid NOT NULL,
        node_id text NOT NULL,
        workspace_id text NOT NULL,
        holder text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (workflow_id, node_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_threads (
        workflow_id uuid NOT NULL,
        thread_id text NOT NULL,
        workspace_id text NOT NULL,
        node_id text,
        resolved boolean NOT NULL DEFAULT false,
        resolved_by text,
        resolved_at timestamptz,
        created_at timestamptz NOT NULL,
        orphaned boolean NOT NULL DEFAULT false,
        PRIMARY KEY (workflow_id, thread_id)
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_comments (
        workflow_id uuid NOT NULL,
        comment_id text NOT NULL,
        thread_id text NOT NULL,
        workspace_id text NOT NULL,
        author text NOT NULL,
        body text,
        mentions jsonb NOT NULL DEFAULT '[]',
        created_at timestamptz NOT NULL,
        edited_at timestamptz,
        deleted_at timestamptz,
        deleted_by text,
        PRIMARY KEY (workflow_id, comment_id)
    )""",
    # `orphaned` came later: added where it is missing (only then, since an ALTER TABLE
    # takes the table's strongest lock), set for the threads whose node is gone. A node
    # removed and added again before that is not told apart: `autoops replay --projection
    # workflows` rebuilds the exact flags from the events.
    """
    DO $orphaned$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'read'
                       AND table_name = 'workflow_threads' AND column_name = 'orphaned') THEN
            ALTER TABLE read.workflow_threads ADD COLUMN orphaned boolean NOT NULL DEFAULT false;
            UPDATE read.workflow_threads t SET orphaned = true
            WHERE t.node_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM read.workflow_nodes n
                WHERE n.workflow_id = t.workflow_id AND n.node_id = t.node_id);
        END IF;
    END $orphaned$""",
    """
    CREATE TABLE IF NOT EXISTS read.workflow_versions (
        workflow_id uuid NOT NULL,
        number integer NOT NULL,
        workspace_id text NOT NULL,
        aggregate_version integer NOT NULL,
        note text NOT NULL,
        published_at timestamptz NOT NULL,
        published_by text NOT NULL,
        graph jsonb NOT NULL,
        PRIMARY KEY (workflow_id, number)
    )""",
]

HISTORY = [
    """
    CREATE TABLE IF NOT EXISTS read.workflow_history (
        workflow_id uuid NOT NULL,
        version integer NOT NULL,
        workspace_id text NOT NULL,
        event_id uuid NOT NULL,
        type text NOT NULL,
        actor_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        payload jsonb NOT NULL,
        PRIMARY KEY (workflow_id, version)
    )""",
]

IDENTITY = [
    # A user's own row; the exception to "every row has a workspace": it is read only by the
    # user it describes (row-level security keys it on the user id).
    """
    CREATE TABLE IF NOT EXISTS read.users (
        id uuid PRIMARY KEY,
        email text NOT NULL,
        display_name text NOT NULL,
        totp_enabled boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL,
        last_login_at timestamptz
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workspaces (
        workspace_id text PRIMARY KEY,
        name text NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    )""",
    """
    CREATE TABLE IF NOT EXISTS read.workspace_members (
        workspace_id text NOT NULL,
        member_id text NOT NULL,
        user_id text,
        email text NOT NULL,
        display_name text NOT NULL,
        role text NOT NULL,
        status text NOT NULL,
        since timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, member_id)
    )""",
    "CREATE INDEX IF NOT EXISTS workspace_members_by_user ON read.workspace_members (user_id)",
]

#: The role the api reads as: SELECT on `read`, nothing else, bound by row-level security.
READER_ROLE = "autoops_reader"

#: Whether the role exists and the database user may SET ROLE to it.
READER_READY = (
    f"SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER_ROLE}')"
    f" AND pg_has_role(CURRENT_USER, '{READER_ROLE}', 'MEMBER')"
)
#: Creating the role takes CREATEROLE; a database user without it needs an administrator to
#: run these once (see READER_SETUP_HELP).
READER_ROLE_DDL = [
    f"""
    DO $$ BEGIN
        CREATE ROLE {READER_ROLE} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$""",
    f"GRANT {READER_ROLE} TO CURRENT_USER",
]
READER_SETUP_HELP = (
    f"the database user cannot create role {READER_ROLE}; as an administrator run: "
    f"CREATE ROLE {READER_ROLE} NOLOGIN; GRANT {READER_ROLE} TO <the AutoOps database user>;"
)
READER = [f"GRANT USAGE ON SCHEMA read TO {READER_ROLE}"]


def isolation(table: str) -> list[str]:
    """Row-level security of one read-model table: readers see their workspace's rows only
    (the users table: their own row). Writers (the projector, the table owner) are exempt."""
    if table == "read.users":
        rule = "id::text = current_setting('autoops.user_id', true)"
    elif table == "read.workspace_members":
        rule = (
            "workspace_id = current_setting('autoops.workspace_id', true)"
            " OR user_id = current_setting('autoops.user_id', true)"
        )
    elif table == "read.workspaces":
        rule = (
            "workspace_id = current_setting('autoops.workspace_id', true) OR workspace_id IN"
            " (SELECT m.workspace_id FROM read.workspace_members m"
            "  WHERE m.user_id = current_setting('autoops.user_id', true))"
        )
    else:
        rule = "workspace_id = current_setting('autoops.workspace_id', true)"
    return [
        f"GRANT SELECT ON {table} TO {READER_ROLE}",
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS workspace_isolation ON {table}",
        f"CREATE POLICY workspace_isolation ON {table} FOR SELECT TO {READER_ROLE} USING ({rule})",
    ]


AUDIT = [
    """
    CREATE TABLE IF NOT EXISTS read.audit_log (
        workspace_id text NOT NULL,
        position bigint NOT NULL,
        event_id uuid NOT NULL,
        type text NOT NULL,
        aggregate_id uuid NOT NULL,
        actor_id text NOT NULL,
        occurred_at timestamptz NOT NULL,
        data jsonb NOT NULL,
        PRIMARY KEY (workspace_id, event_id)
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_by_time"
    " ON read.audit_log (workspace_id, occurred_at DESC, event_id)",
]

EXECUTIONS = [
    """
    CREATE TABLE IF NOT EXISTS read.executions (
        id uuid PRIMARY KEY,
        workspace_id text NOT NULL,
        workflow_id text NOT NULL,
        workflow_version integer NOT NULL,
        status text NOT NULL,
        trigger jsonb NOT NULL,
        inputs jsonb NOT NULL,
        output jsonb,
        error text,
        parent_id uuid,
        retry_of uuid,
        node_types jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        version integer NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS executions_by_time"
    " ON read.executions (workspace_id, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS executions_by_workflow"
    " ON read.executions (workspace_id, workflow_id, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS executions_by_status"
    " ON read.executions (workspace_id, status, created_at DESC, id DESC)",
    # One row per attempt of a step; skipped and reused steps (which run no attempt) have
    # attempt 0.
    """
    CREATE TABLE IF NOT EXISTS read.execution_steps (
        execution_id uuid NOT NULL,
        node_id text NOT NULL,
        attempt integer NOT NULL,
        workspace_id text NOT NULL,
        node_type text NOT NULL,
        status text NOT NULL,
        input jsonb,
        output jsonb,
        branch text,
        error jsonb,
        scheduled_at timestamptz NOT NULL,
        not_before timestamptz,
        started_at timestamptz,
        finished_at timestamptz,
        runner_id text,
        reused_from uuid,
        children jsonb NOT NULL DEFAULT '[]',
        PRIMARY KEY (execution_id, node_id, attempt)
    )""",
    # Names and kinds only: a credential's secret never leaves the event store.
    """
    CREATE TABLE IF NOT EXISTS read.credentials (
        id uuid PRIMARY KEY,
        workspace_id text NOT NULL,
        name text NOT NULL,
        kind text NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL,
        version integer NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS credentials_by_name ON read.credentials (workspace_id, name)",
    # A deleted variable keeps its row (deleted, with the version that deleted it), so an
    # older event delivered again cannot bring it back.
    """
    CREATE TABLE IF NOT EXISTS read.variables (
        workspace_id text NOT NULL,
        name text NOT NULL,
        value jsonb,
        deleted boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL,
        updated_by text NOT NULL,
        version integer NOT NULL,
        PRIMARY KEY (workspace_id, name)
    )""",
]
