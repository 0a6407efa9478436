-- The `workflows` projection: workflow list, detail (nodes, edges, node locks) and published
-- versions. A lock's row stays until its release or `LockExpired`; readers leave out leases
-- that ran out before that.
-- Pure: a batch of public envelopes (JSON array, in order) in, read-model changes out.
-- The workflow row changes with every event; a run of events of one workflow updates it once
-- (a row updated a hundred times in one transaction keeps a hundred versions to walk).
CREATE OR REPLACE FUNCTION read.touch_workflow(
    wid uuid, v integer, at timestamptz, who text, nodes integer, edges integer,
    new_name text, new_description text, published integer
) RETURNS void LANGUAGE sql AS $touch$
    UPDATE read.workflows SET version = v, updated_at = at, updated_by = who,
        node_count = node_count + nodes, edge_count = edge_count + edges,
        name = COALESCE(new_name, name), description = COALESCE(new_description, description),
        published_version = COALESCE(published, published_version)
    WHERE id = wid;
$touch$;

CREATE OR REPLACE FUNCTION read.apply_workflows(events jsonb) RETURNS void
LANGUAGE plpgsql AS $fold$
DECLARE
    e jsonb;
    d jsonb;
    kind text;
    wid uuid;
    ws text;
    v integer;
    at timestamptz;
    who text;
    removed text[];
    -- The pending change of the workflow row of the current run of events.
    t_wid uuid;
    t_v integer;
    t_at timestamptz;
    t_who text;
    t_nodes integer := 0;
    t_edges integer := 0;
    t_name text;
    t_description text;
    t_published integer;
BEGIN
    FOR e IN SELECT value FROM jsonb_array_elements(events) LOOP
        kind := e->>'type';
        d := e->'data';
        wid := (e->>'aggregate_id')::uuid;
        ws := e->>'workspace_id';
        v := (e->>'aggregate_version')::integer;
        at := (e->>'occurred_at')::timestamptz;
        who := e->>'actor_id';
        IF t_wid IS DISTINCT FROM wid THEN
            IF t_wid IS NOT NULL AND t_v IS NOT NULL THEN
                PERFORM read.touch_workflow(t_wid, t_v, t_at, t_who, t_nodes, t_edges, t_name,
                                            t_description, t_published);
            END IF;
            t_wid := wid;
            t_v := NULL; t_nodes := 0; t_edges := 0;
            t_name := NULL; t_description := NULL; t_published := NULL;
        END IF;
        IF kind <> 'workflow.Created' THEN
            t_v := v; t_at := at; t_who := who;
        END IF;
        CASE kind
        WHEN 'workflow.Created' THEN
            INSERT INTO read.workflows (id, workspace_id, name, description, version,
                                       created_at, created_by, updated_at, updated_by)
            VALUES (wid, ws, d->>'name', d->>'description', v, at, who, at, who);
        WHEN 'workflow.Renamed' THEN
            t_name := d->>'name';
        WHEN 'workflow.DescriptionChanged' THEN
            t_description := d->>'description';
        WHEN 'workflow.NodeAdded' THEN
            INSERT INTO read.workflow_nodes (workflow_id, node_id, workspace_id, type, name,
                                             config, x, y)
            VALUES (wid, d->>'node_id', ws, d->>'node_type', d->>'name', d->'config',
                    (d->>'x')::float8, (d->>'y')::float8);
            t_nodes := t_nodes + 1;
        WHEN 'workflow.NodeUpdated' THEN
            UPDATE read.workflow_nodes SET name = COALESCE(d->>'name', name),
                config = CASE WHEN jsonb_typeof(d->'config') = 'object'
                              THEN d->'config' ELSE config END
            WHERE workflow_id = wid AND node_id = d->>'node_id';
            NULL;
        WHEN 'workflow.NodeMoved' THEN
            UPDATE read.workflow_nodes SET x = (d->>'x')::float8, y = (d->>'y')::float8
            WHERE workflow_id = wid AND node_id = d->>'node_id';
            NULL;
        WHEN 'workflow.NodeRemoved' THEN
            removed := ARRAY(SELECT jsonb_array_elements_text(d->'removed_edge_ids'));
            DELETE FROM read.workflow_nodes WHERE workflow_id = wid AND node_id = d->>'node_id';
            DELETE FROM read.workflow_edges WHERE workflow_id = wid AND edge_id = ANY(removed);
            DELETE FROM read.workflow_locks WHERE workflow_id = wid AND node_id = d->>'node_id';
            -- Its threads stay, orphaned: a node added later with the same id starts afresh.
            UPDATE read.workflow_threads SET orphaned = true
            WHERE workflow_id = wid AND node_id = d->>'node_id' AND NOT orphaned;
            t_nodes := t_nodes - 1;
            t_edges := t_edges - cardinality(removed);
        WHEN 'workflow.NodesConnected' THEN
            INSERT INTO read.workflow_edges (workflow_id, edge_id, workspace_id, source_id,
                                             target_id, label, condition)
            VALUES (wid, d->>'edge_id', ws, d->>'source_id', d->>'target_id', d->>'label',
                    d->>'condition');
            t_edges := t_edges + 1;
        WHEN 'workflow.NodesDisconnected' THEN
            DELETE FROM read.workflow_edges WHERE workflow_id = wid AND edge_id = d->>'edge_id';
            t_edges := t_edges - 1;
        WHEN 'workflow.Published' THEN
            -- The version freezes the graph as it was just before this event.
            INSERT INTO read.workflow_versions (workflow_id, number, workspace_id,
                aggregate_version, note, published_at, published_by, graph)
            SELECT wid, (d->>'version_number')::integer, ws, v - 1, d->>'note', at, who,
                jsonb_build_object(
                    'nodes', COALESCE((SELECT jsonb_agg(to_jsonb(n) - 'workspace_id'
                        - 'workflow_id' ORDER BY n.node_id) FROM read.workflow_nodes n
                        WHERE n.workflow_id = wid), '[]'),
                    'edges', COALESCE((SELECT jsonb_agg(to_jsonb(g) - 'workspace_id'
                        - 'workflow_id' ORDER BY g.edge_id) FROM read.workflow_edges g
                        WHERE g.workflow_id = wid), '[]'));
            t_published := (d->>'version_number')::integer;
        WHEN 'workflow.NodeLocked' THEN
            INSERT INTO read.workflow_locks (workflow_id, node_id, workspace_id, holder,
                                             expires_at)
            VALUES (wid, d->>'node_id', ws, d->>'holder',
                    to_timestamp((d->>'expires_at')::float8))
            ON CONFLICT (workflow_id, node_id) DO UPDATE SET holder = EXCLUDED.holder,
                expires_at = EXCLUDED.expires_at;
        WHEN 'workflow.LockRenewed' THEN
            UPDATE read.workflow_locks SET expires_at = to_timestamp((d->>'expires_at')::float8)
            WHERE workflow_id = wid AND node_id = d->>'node_id';
            NULL;
        WHEN 'workflow.NodeUnlocked', 'workflow.LockBroken', 'workflow.LockExpired' THEN
            DELETE FROM read.workflow_locks WHERE workflow_id = wid AND node_id = d->>'node_id';
        WHEN 'workflow.CommentAdded' THEN
            IF d->>'thread_id' = d->>'comment_id' THEN
                INSERT INTO read.workflow_threads (workflow_id, thread_id, workspace_id,
                                                   node_id, created_at)
                VALUES (wid, d->>'thread_id', ws, d->>'node_id', at)
                ON CONFLICT DO NOTHING;
            END IF;
            INSERT INTO read.workflow_comments (workflow_id, comment_id, thread_id,
                workspace_id, author, body, mentions, created_at)
            VALUES (wid, d->>'comment_id', d->>'thread_id', ws, who, d->>'body',
                    COALESCE(d->'mentions', '[]'), at)
            ON CONFLICT DO NOTHING;
        WHEN 'workflow.CommentEdited' THEN
            UPDATE read.workflow_comments SET body = d->>'body',
                mentions = COALESCE(d->'mentions', '[]'), edited_at = at
            WHERE workflow_id = wid AND comment_id = d->>'comment_id';
            NULL;
        WHEN 'workflow.CommentDeleted' THEN
            -- A tombstone: the comment keeps its place in the thread, not its words.
            UPDATE read.workflow_comments SET body = NULL, mentions = '[]', deleted_at = at,
                deleted_by = who
            WHERE workflow_id = wid AND comment_id = d->>'comment_id';
            NULL;
        WHEN 'workflow.ThreadResolved', 'workflow.ThreadReopened' THEN
            UPDATE read.workflow_threads
            SET resolved = (kind = 'workflow.ThreadResolved'),
                resolved_by = CASE WHEN kind = 'workflow.ThreadResolved' THEN who END,
                resolved_at = CASE WHEN kind = 'workflow.ThreadResolved' THEN at END
            WHERE workflow_id = wid AND thread_id = d->>'thread_id';
            NULL;
        ELSE
            NULL;  -- an event type this projection does not know yet: only the version moves
        END CASE;
    END LOOP;
    IF t_wid IS NOT NULL AND t_v IS NOT NULL THEN
        PERFORM read.touch_workflow(t_wid, t_v, t_at, t_who, t_nodes, t_edges, t_name,
                                    t_description, t_published);
    END IF;
END
$fold$;
