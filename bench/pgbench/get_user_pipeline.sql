-- get_user.sql in one round trip: the same four statements, pipelined (\startpipeline
-- sends them without waiting; \endpipeline sends one Sync and reads every result). This is
-- what PostgreSQL can do for GetUser's transaction at all: tenantd also sends it in one
-- write. A template like get_user.sql (bench/run.sh fills in @T@ and @TENANT_ID@);
-- pipeline mode needs -M extended or -M prepared.
\set t @T@
\set u random(1, :umax)
\startpipeline
BEGIN;
SET LOCAL app.tenant_id = '@TENANT_ID@';
SELECT tenant_id, id, email, display_name, role, create_time, update_time, revision FROM users WHERE tenant_id = md5('t' || :t)::uuid AND id = md5('u' || :t || '-' || :u)::uuid LIMIT 1;
COMMIT;
\endpipeline
