-- The insert of CreateUser without its audit event (src/db/users.rs::insert), in a random
-- tenant of :tmin..:tmax. tenantd's ids are UUIDv7; gen_random_uuid() is v4.
\set t random(:tmin, :tmax)
BEGIN;
SELECT set_config('app.tenant_id', md5('t' || :t)::uuid::text, true);
INSERT INTO users (tenant_id, id, email, display_name, role) VALUES (md5('t' || :t)::uuid, gen_random_uuid(), 'pg-' || gen_random_uuid() || '@bench.example', '', 'member') RETURNING tenant_id, id, email, display_name, role, create_time, update_time, revision;
COMMIT;
