-- The read transaction tenantd runs for GetUser (src/tenancy/transaction.rs and
-- src/db/users.rs::find): BEGIN, SET LOCAL of the tenant, the SELECT, COMMIT, with a
-- random user 1..:umax (-D variable) of one tenant.
--
-- A template: SET takes no bind parameter, so the tenant id must be in the SQL text, and
-- pgbench cannot build a string from a random number in extended or prepared mode (its
-- variables become $n parameters there). bench/run.sh therefore writes one copy per
-- tenant, with @T@ (the seed's tenant number) and @TENANT_ID@ (md5('t' || @T@)::uuid,
-- bench/seed.sql) filled in, and passes every copy with -f: pgbench picks a script at
-- random per transaction, so the tenants are uniform, as with `\set t random(...)`.
-- Run with -M prepared, as diesel-async caches prepared statements. The md5() calls build
-- the seed's deterministic ids; tenantd sends the ids as parameters.
\set t @T@
\set u random(1, :umax)
BEGIN;
SET LOCAL app.tenant_id = '@TENANT_ID@';
SELECT tenant_id, id, email, display_name, role, create_time, update_time, revision FROM users WHERE tenant_id = md5('t' || :t)::uuid AND id = md5('u' || :t || '-' || :u)::uuid LIMIT 1;
COMMIT;
