-- Seeds :count schema tenants (ids ...-8000-2<11 digits>) as tenantd provisions them (the
-- same functions, as tenantd_owner, stamped current), and as many pooled tenants
-- (...-8000-1<11 digits>), each with 10 users. Run as a superuser.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
INSERT INTO tenants (id, slug, display_name, state, isolation_tier)
SELECT format('00000000-0000-7000-8000-%s%s', tier, lpad(n::text, 11, '0'))::uuid,
       format('b%s-%s', tier, n), 'bench', 'active', CASE tier WHEN 1 THEN 'pooled' ELSE 'schema' END
FROM generate_series(1, :count) AS n, (VALUES (1), (2)) AS t(tier);
SET ROLE tenantd_owner;
DO $$
DECLARE
    tenant uuid;
    schema text;
BEGIN
    FOR tenant IN SELECT id FROM tenants WHERE isolation_tier = 'schema' AND schema_version IS NULL LOOP
        schema := 'tenant_' || replace(tenant::text, '-', '');
        EXECUTE format('CREATE SCHEMA %I', schema);
        PERFORM tenantd_create_tenant_tables(tenant, schema, ARRAY['users', 'documents', 'tenant_settings']);
        PERFORM tenantd_secure_tenant_tables(schema, ARRAY['users', 'documents', 'tenant_settings']);
        PERFORM set_config('app.tenant_id', tenant::text, true);
        EXECUTE format('INSERT INTO %I.users (tenant_id, id, email, role) SELECT $1, gen_random_uuid(), '
                       '''u'' || u || ''@example.com'', ''member'' FROM generate_series(1, 10) AS u', schema)
            USING tenant;
        UPDATE tenants SET schema_version = '20261203000014' WHERE id = tenant;
        -- One transaction per tenant, as tenantd provisions (and to keep locks bounded).
        COMMIT;
    END LOOP;
END
$$;
RESET ROLE;
INSERT INTO users (tenant_id, id, email, role)
SELECT t.id, gen_random_uuid(), 'u' || u || '@example.com', 'member'
FROM tenants t, generate_series(1, 10) AS u WHERE t.isolation_tier = 'pooled' AND t.slug LIKE 'b1-%';
