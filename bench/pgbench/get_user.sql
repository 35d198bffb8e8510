-- The read transaction tenantd runs for GetUser (src/tenancy/transaction.rs and
-- src/db/users.rs::find), with a random user of tenants :tmin..:tmax (-D variables).
-- Run with -M prepared, as diesel-async caches prepared statements. The md5() calls build
-- the seed's deterministic ids (bench/seed.sql); tenantd sends the ids as parameters.
\set t random(:tmin, :tmax)
\set u random(1, :umax)
BEGIN;
SELECT set_config('app.tenant_id', md5('t' || :t)::uuid::text, true);
SELECT tenant_id, id, email, display_name, role, create_time, update_time, revision FROM users WHERE tenant_id = md5('t' || :t)::uuid AND id = md5('u' || :t || '-' || :u)::uuid LIMIT 1;
COMMIT;
