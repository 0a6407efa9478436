-- The `identity` projection: users, workspaces and their members (invitations included).
-- Each table derives from one aggregate type, whose events arrive in order.
CREATE OR REPLACE FUNCTION read.apply_identity(events jsonb) RETURNS void
LANGUAGE plpgsql AS $fold$
DECLARE
    e jsonb;
    d jsonb;
    agg uuid;
    ws text;
    at timestamptz;
BEGIN
    FOR e IN SELECT value FROM jsonb_array_elements(events) LOOP
        d := e->'data';
        agg := (e->>'aggregate_id')::uuid;
        ws := e->>'workspace_id';
        at := (e->>'occurred_at')::timestamptz;
        CASE e->>'type'
        WHEN 'identity.UserRegistered' THEN
            INSERT INTO read.users (id, email, display_name, created_at)
            VALUES (agg, d->>'email', d->>'display_name', at);
        WHEN 'identity.TotpEnabled' THEN
            UPDATE read.users SET totp_enabled = true WHERE id = agg;
        WHEN 'identity.TotpDisabled' THEN
            UPDATE read.users SET totp_enabled = false WHERE id = agg;
        WHEN 'identity.LoginSucceeded' THEN
            UPDATE read.users SET last_login_at = at WHERE id = agg;
        WHEN 'identity.WorkspaceCreated' THEN
            INSERT INTO read.workspaces (workspace_id, name, created_at, created_by)
            VALUES (agg::text, d->>'name', at, e->>'actor_id');
        WHEN 'identity.MemberAdded' THEN
            INSERT INTO read.workspace_members (workspace_id, member_id, user_id, email,
                                                display_name, role, status, since)
            VALUES (ws, d->>'user_id', d->>'user_id', d->>'email', d->>'display_name',
                    d->>'role', 'active', at);
        WHEN 'identity.MemberInvited' THEN
            INSERT INTO read.workspace_members (workspace_id, member_id, user_id, email,
                                                display_name, role, status, since)
            VALUES (ws, d->>'member_id', NULL, d->>'email', '', d->>'role', 'invited', at);
        WHEN 'identity.InvitationAccepted' THEN
            UPDATE read.workspace_members
            SET member_id = d->>'user_id', user_id = d->>'user_id',
                display_name = d->>'display_name', status = 'active', since = at
            WHERE workspace_id = ws AND member_id = d->>'member_id';
        WHEN 'identity.MemberRoleChanged' THEN
            UPDATE read.workspace_members SET role = d->>'role'
            WHERE workspace_id = ws AND member_id = d->>'member_id';
        WHEN 'identity.MemberRemoved' THEN
            DELETE FROM read.workspace_members
            WHERE workspace_id = ws AND member_id = d->>'member_id';
        ELSE
            NULL;  -- sign-ins, sessions and addresses change no read model here
        END CASE;
    END LOOP;
END
$fold$;
