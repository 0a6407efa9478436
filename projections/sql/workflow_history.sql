-- The `workflow_history` projection: one row per event, with who did it and when.
CREATE OR REPLACE FUNCTION read.apply_workflow_history(events jsonb) RETURNS void
LANGUAGE sql AS $fold$
    INSERT INTO read.workflow_history (workflow_id, version, workspace_id, event_id, type,
                                       actor_id, occurred_at, payload)
    SELECT (e->>'aggregate_id')::uuid, (e->>'aggregate_version')::integer, e->>'workspace_id',
           (e->>'event_id')::uuid, split_part(e->>'type', '.', 2), e->>'actor_id',
           (e->>'occurred_at')::timestamptz, e->'data'
    FROM jsonb_array_elements(events) AS e;
$fold$;
