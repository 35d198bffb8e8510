-- The whole CreateUser transaction as tenantd runs it (no request_id, so no idempotency
-- record): the tenant setting, the user insert, and the audit event insert
-- (src/domain/users.rs::create, src/db/audit.rs::insert). A template like get_user.sql:
-- bench/run.sh writes one copy per tenant of the write set, with @T@ and @TENANT_ID@
-- filled in. pgbench waits for each statement (5 round trips); tenantd sends BEGIN, SET
-- and the user insert together (3 round trips).
\set t @T@
BEGIN;
SET LOCAL app.tenant_id = '@TENANT_ID@';
INSERT INTO users (tenant_id, id, email, display_name, role) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'pg-' || gen_random_uuid() || '@bench.example', '', 'member') RETURNING tenant_id, id, email, display_name, role, create_time, update_time, revision \gset
INSERT INTO audit_events (tenant_id, id, actor_type, actor_id, action, resource_type, resource_id, request_id, details) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'platform', '', 'user.create', 'user', :id, gen_random_uuid()::text, '{}');
COMMIT;
