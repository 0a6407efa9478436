-- The `executions` projection: executions, the attempts of their steps, the names of the
-- workspace's credentials and its variables (the aggregates of the execution context).
-- Pure: a batch of public envelopes (JSON array, in order) in, read-model changes out.
-- An event at or below the execution row's version is skipped, so a redelivered event changes
-- nothing even without the tracking table. As in `workflows`, a run of events of one execution
-- updates its row once.

-- A runner's timestamp: epoch seconds (what runners send) or ISO 8601 text; NULL otherwise,
-- and for seconds outside PostgreSQL's timestamps (4714 BC to 294276 AD), which would fail
-- the batch for ever (a delay of 1e300 s is a valid config).
CREATE OR REPLACE FUNCTION read.execution_instant(j jsonb) RETURNS timestamptz
LANGUAGE sql STABLE AS $instant$
    SELECT CASE jsonb_typeof(j)
        WHEN 'number' THEN CASE WHEN (j #>> '{}')::float8
            BETWEEN -210866803200 AND 9224318015999 THEN to_timestamp((j #>> '{}')::float8) END
        WHEN 'string' THEN (j #>> '{}')::timestamptz
    END;
$instant$;

CREATE OR REPLACE FUNCTION read.touch_execution(
    eid uuid, v integer, at timestamptz, new_status text, started timestamptz,
    finished timestamptz, new_output jsonb, new_error text
) RETURNS void LANGUAGE sql AS $touch$
    UPDATE read.executions SET version = v, updated_at = at,
        status = COALESCE(new_status, status),
        started_at = COALESCE(started, started_at),
        finished_at = COALESCE(finished, finished_at),
        output = CASE WHEN finished IS NULL THEN output ELSE new_output END,
        error = CASE WHEN finished IS NULL THEN error ELSE new_error END
    WHERE id = eid;
$touch$;

CREATE OR REPLACE FUNCTION read.apply_executions(events jsonb) RETURNS void
LANGUAGE plpgsql AS $fold$
DECLARE
    e jsonb;
    d jsonb;
    kind text;
    agg uuid;
    ws text;
    v integer;
    at timestamptz;
    node text;
    step_attempt integer;
    -- The execution of the current run of events: its version so far and its node types.
    r_id uuid;
    r_v integer;
    r_types jsonb;
    -- The pending change of its row.
    p_dirty boolean := false;
    p_at timestamptz;
    p_status text;
    p_started timestamptz;
    p_finished timestamptz;
    p_output jsonb;
    p_error text;
BEGIN
    FOR e IN SELECT value FROM jsonb_array_elements(events) LOOP
        kind := e->>'type';
        d := e->'data';
        agg := (e->>'aggregate_id')::uuid;
        ws := e->>'workspace_id';
        v := (e->>'aggregate_version')::integer;
        at := (e->>'occurred_at')::timestamptz;

        IF kind = 'execution.CredentialCreated' THEN
            INSERT INTO read.credentials (id, workspace_id, name, kind, created_at, created_by,
                                          version)
            VALUES (agg, ws, d->>'name', d->>'kind', at, e->>'actor_id', v)
            ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
                created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by,
                version = EXCLUDED.version
            WHERE read.credentials.version < EXCLUDED.version;
            CONTINUE;
        ELSIF kind = 'execution.CredentialReplaced' THEN
            -- A rotated secret (its row stays, with the new kind) or a deleted name taken
            -- again (a new row).
            INSERT INTO read.credentials (id, workspace_id, name, kind, created_at, created_by,
                                          version)
            VALUES (agg, ws, d->>'name', d->>'kind', at, e->>'actor_id', v)
            ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, version = EXCLUDED.version
            WHERE read.credentials.version < EXCLUDED.version;
            CONTINUE;
        ELSIF kind = 'execution.CredentialDeleted' THEN
            DELETE FROM read.credentials WHERE id = agg AND version < v;
            CONTINUE;
        ELSIF kind LIKE 'execution.Credential%' THEN
            UPDATE read.credentials SET version = v WHERE id = agg AND version < v;
            CONTINUE;
        ELSIF kind IN ('execution.VariableSet', 'execution.VariableDeleted') THEN
            INSERT INTO read.variables (workspace_id, name, value, deleted, updated_at,
                                        updated_by, version)
            VALUES (ws, d->>'name', d->'value', kind = 'execution.VariableDeleted', at,
                    e->>'actor_id', v)
            ON CONFLICT (workspace_id, name) DO UPDATE SET value = EXCLUDED.value,
                deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at,
                updated_by = EXCLUDED.updated_by, version = EXCLUDED.version
            WHERE read.variables.version < EXCLUDED.version;
            CONTINUE;
        ELSIF kind LIKE 'execution.Variable%' THEN
            CONTINUE;  -- VariablesCreated: the workspace's first change follows it
        END IF;

        IF r_id IS DISTINCT FROM agg THEN
            IF p_dirty THEN
                PERFORM read.touch_execution(r_id, r_v, p_at, p_status, p_started, p_finished,
                                             p_output, p_error);
            END IF;
            r_id := agg;
            r_v := NULL;
            r_types := NULL;
            SELECT x.version, x.node_types INTO r_v, r_types
            FROM read.executions x WHERE x.id = agg;
            p_dirty := false;
            p_status := NULL; p_started := NULL; p_finished := NULL;
            p_output := NULL; p_error := NULL;
        END IF;

        IF kind = 'execution.ExecutionStarted' THEN
            IF r_v IS NULL THEN
                r_types := COALESCE((SELECT jsonb_object_agg(n.key, n.value->'type')
                                     FROM jsonb_each(d->'nodes') AS n), '{}');
                INSERT INTO read.executions (id, workspace_id, workflow_id, workflow_version,
                    status, trigger, inputs, parent_id, retry_of, node_types, created_at,
                    version, updated_at)
                VALUES (agg, ws, d->>'workflow_id', (d->>'workflow_version')::integer,
                    'QUEUED', COALESCE(NULLIF(d->'trigger', 'null'), '{"kind": "manual"}'),
                    COALESCE(NULLIF(d->'inputs', 'null'), '{}'),
                    NULLIF(d->'parent'->>'execution_id', '')::uuid,
                    NULLIF(d->>'retry_of', '')::uuid, r_types, at, v, at);
                r_v := v;
            END IF;
            CONTINUE;
        END IF;
        IF r_v IS NULL OR v <= r_v THEN
            CONTINUE;  -- applied already (or an execution whose start was never seen)
        END IF;
        r_v := v;
        p_at := at;
        p_dirty := true;
        node := d->>'node_id';
        step_attempt := COALESCE((d->>'attempt')::integer, 0);

        CASE kind
        WHEN 'execution.ExecutionAdmitted' THEN
            p_status := 'RUNNING';
            p_started := at;
        WHEN 'execution.StepScheduled' THEN
            -- `started`: its task left at once, or the orchestrator began it. Otherwise (a
            -- retry's backoff) it waits until StepDispatched. Without the flag, a step due
            -- when it was scheduled counts as started.
            INSERT INTO read.execution_steps (execution_id, node_id, attempt, workspace_id,
                node_type, status, input, scheduled_at, not_before)
            VALUES (agg, node, step_attempt, ws,
                COALESCE(d->>'node_type', r_types->>node, ''),
                CASE WHEN COALESCE((d->>'started')::boolean,
                                   read.execution_instant(d->'not_before') <= at, true)
                     THEN 'running' ELSE 'scheduled' END,
                NULLIF(d->'input', 'null'), at, read.execution_instant(d->'not_before'))
            ON CONFLICT (execution_id, node_id, attempt) DO NOTHING;
        WHEN 'execution.StepDispatched' THEN
            UPDATE read.execution_steps SET status = 'running',
                input = COALESCE(NULLIF(d->'input', 'null'), input)
            WHERE execution_id = agg AND node_id = node AND attempt = step_attempt
              AND status = 'scheduled';
        WHEN 'execution.StepSucceeded', 'execution.StepFailed' THEN
            -- A step the orchestrator completed as it began it (its StepSucceeded carries
            -- `node_type` and `input`) has no row yet.
            INSERT INTO read.execution_steps AS s (execution_id, node_id, attempt, workspace_id,
                node_type, status, input, output, branch, error, scheduled_at, started_at,
                finished_at, runner_id)
            VALUES (agg, node, step_attempt, ws,
                COALESCE(d->>'node_type', r_types->>node, ''),
                CASE WHEN kind = 'execution.StepSucceeded' THEN 'succeeded' ELSE 'failed' END,
                NULLIF(d->'input', 'null'), NULLIF(d->'output', 'null'), d->>'branch',
                CASE WHEN kind = 'execution.StepFailed' THEN jsonb_build_object(
                    'type', d->>'error_type', 'message', d->>'message',
                    'retryable', COALESCE((d->>'retryable')::boolean, false))
                    || CASE WHEN jsonb_typeof(d->'details') = 'object'
                        THEN jsonb_build_object('details', d->'details') ELSE '{}' END END,
                at, read.execution_instant(d->'started_at'),
                COALESCE(read.execution_instant(d->'finished_at'), at), d->>'runner_id')
            ON CONFLICT (execution_id, node_id, attempt) DO UPDATE SET
                status = EXCLUDED.status, input = COALESCE(EXCLUDED.input, s.input),
                output = EXCLUDED.output, branch = EXCLUDED.branch,
                error = EXCLUDED.error, started_at = COALESCE(EXCLUDED.started_at, s.started_at),
                finished_at = EXCLUDED.finished_at, runner_id = EXCLUDED.runner_id;
        WHEN 'execution.StepSkipped' THEN
            INSERT INTO read.execution_steps (execution_id, node_id, attempt, workspace_id,
                node_type, status, scheduled_at)
            VALUES (agg, node, 0, ws, COALESCE(r_types->>node, ''), 'skipped', at)
            ON CONFLICT (execution_id, node_id, attempt) DO NOTHING;
        WHEN 'execution.StepReused' THEN
            INSERT INTO read.execution_steps (execution_id, node_id, attempt, workspace_id,
                node_type, status, output, branch, error, scheduled_at, finished_at,
                reused_from)
            VALUES (agg, node, 0, ws, COALESCE(r_types->>node, ''), 'reused',
                NULLIF(d->'output', 'null'), d->>'branch',
                CASE WHEN jsonb_typeof(d->'error') = 'object' THEN jsonb_build_object(
                    'type', d->'error'->>'type', 'message', d->'error'->>'message',
                    'retryable', false) END,
                at, at, NULLIF(d->>'from_execution', '')::uuid)
            ON CONFLICT (execution_id, node_id, attempt) DO NOTHING;
        WHEN 'execution.ChildStarted' THEN
            UPDATE read.execution_steps SET
                status = CASE WHEN status = 'scheduled' THEN 'running' ELSE status END,
                children = children || jsonb_build_array(jsonb_build_object(
                    'child_id', d->>'child_id', 'index', d->'index', 'status', NULL,
                    'error', NULL))
            WHERE execution_id = agg AND node_id = node AND attempt = step_attempt;
        WHEN 'execution.ChildFinished' THEN
            UPDATE read.execution_steps SET children = (
                SELECT jsonb_agg(CASE WHEN c.value->>'child_id' = d->>'child_id'
                    THEN c.value || jsonb_build_object('status', d->'status',
                                                       'error', d->'error')
                    ELSE c.value END ORDER BY c.ordinality)
                FROM jsonb_array_elements(children) WITH ORDINALITY AS c)
            WHERE execution_id = agg AND node_id = node AND attempt = step_attempt
              AND jsonb_array_length(children) > 0;
        WHEN 'execution.ExecutionFinished' THEN
            -- Steps still under way when it ended were told to stop (or never began).
            UPDATE read.execution_steps SET status = 'cancelled', finished_at = at
            WHERE execution_id = agg AND status IN ('scheduled', 'running');
            p_status := d->>'status';
            p_finished := at;
            p_output := NULLIF(d->'output', 'null');
            p_error := d->>'error';
        ELSE
            NULL;  -- an event type this projection does not know yet: only the version moves
        END CASE;
    END LOOP;
    IF p_dirty THEN
        PERFORM read.touch_execution(r_id, r_v, p_at, p_status, p_started, p_finished,
                                     p_output, p_error);
    END IF;
END
$fold$;
