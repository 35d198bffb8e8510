-- Seed for bench/run.sh, run as the superuser (which bypasses RLS, so no set_config is
-- needed) right after `tenantd migrate`. Ids are deterministic so that pgbench scripts can
-- compute them from integers: tenant n is md5('t' || n)::uuid, user u of tenant n is
-- md5('u' || n || '-' || u)::uuid.
--
-- Tenant sets (psql variables, set by run.sh):
--   read set A: tenants 1 .. :small_tenants, :small_users users each   (default 10 x 10,000)
--   read set B: the next :large_tenants tenants, :large_users users each (default 10,000 x 10)
--   write set W: the next 10 tenants, no users; CreateUser and the pgbench inserts write here,
--   so the read sets never change between rounds.
\set ON_ERROR_STOP on
SELECT :small_tenants AS a_last, :small_tenants + :large_tenants AS b_last,
       :small_tenants + :large_tenants + 10 AS w_last \gset

INSERT INTO tenants (id, slug, display_name, state)
SELECT md5('t' || n)::uuid, 'bench-' || n, 'Bench tenant ' || n, 'active'
FROM generate_series(1, :w_last) AS n;

INSERT INTO users (tenant_id, id, email, display_name, role)
SELECT md5('t' || t)::uuid, md5('u' || t || '-' || u)::uuid,
       'user' || u || '@t' || t || '.bench.example', 'User ' || u, 'member'
FROM generate_series(1, :a_last) AS t, generate_series(1, :small_users) AS u;

INSERT INTO users (tenant_id, id, email, display_name, role)
SELECT md5('t' || t)::uuid, md5('u' || t || '-' || u)::uuid,
       'user' || u || '@t' || t || '.bench.example', 'User ' || u, 'member'
FROM generate_series(:a_last + 1, :b_last) AS t, generate_series(1, :large_users) AS u;

VACUUM ANALYZE tenants;
VACUUM ANALYZE users;
VACUUM ANALYZE audit_events;
