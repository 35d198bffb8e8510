-- The insert of CreateUser without its audit event (src/db/users.rs::insert), in one
-- tenant. A template like get_user.sql: bench/run.sh writes one copy per tenant of the
-- write set, with @T@ and @TENANT_ID@ filled in. tenantd's ids are UUIDv7;
-- gen_random_uuid() is v4.
\set t @T@
BEGIN;
SET LOCAL app.tenant_id = '@TENANT_ID@';
INSERT INTO users (tenant_id, id, email, display_name, role) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'pg-' || gen_random_uuid() || '@bench.example', '', 'member') RETURNING tenant_id, id, email, display_name, role, create_time, update_time, revision;
COMMIT;
