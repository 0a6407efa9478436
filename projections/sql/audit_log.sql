-- The `audit_log` projection: every identity event of a workspace (sign-ins, failed sign-ins,
-- refreshes, revocations, member and role changes), newest first when read.
CREATE OR REPLACE FUNCTION read.apply_audit_log(events jsonb) RETURNS void
LANGUAGE sql AS $fold$
    INSERT INTO read.audit_log (workspace_id, position, event_id, type, aggregate_id, actor_id,
                                occurred_at, data)
    SELECT e->>'workspace_id', COALESCE((e->>'position')::bigint, 0), (e->>'event_id')::uuid,
           split_part(e->>'type', '.', 2), (e->>'aggregate_id')::uuid, e->>'actor_id',
           (e->>'occurred_at')::timestamptz, e->'data'
    FROM jsonb_array_elements(events) AS e
    WHERE COALESCE(e->>'workspace_id', '') <> ''
    ON CONFLICT DO NOTHING;
$fold$;
