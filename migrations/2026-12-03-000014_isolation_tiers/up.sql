-- Why: isolation tiers (issue 11, decision 0018). A tenant is either pooled (its rows in the
-- shared tables) or has a schema of its own (`tenant_<32 hex of its id>`) holding its users,
-- documents and settings. The registry records the tier, whether the schema is still being
-- built (state 'provisioning') and which tenant-schema migration the schema has reached, so
-- resolution reads all of it in its one query.
--
-- DDL for tenant schemas does not run as the app role: a separate login role,
-- tenantd_provisioner, may only become tenantd_owner (SET ROLE, NOINHERIT), and
-- tenantd_owner may create schemas in this database. The app role still owns nothing and
-- can create nothing.
--
-- The shared tables' policies move to the wrapped form, whose `(SELECT ...)` is an InitPlan
-- evaluated once per statement instead of once per row (same answers: NULL matches no row).
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check
    CHECK (state IN ('provisioning', 'active', 'suspended', 'deleted'));
ALTER TABLE tenants ADD COLUMN isolation_tier text NOT NULL DEFAULT 'pooled'
    CONSTRAINT tenants_isolation_tier_check CHECK (isolation_tier IN ('pooled', 'schema'));
-- The tenant-schema migration a schema tenant's schema has reached; NULL while it has none.
ALTER TABLE tenants ADD COLUMN schema_version text;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_provisioner') THEN
        CREATE ROLE tenantd_provisioner LOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
ALTER ROLE tenantd_provisioner LOGIN NOINHERIT NOCREATEDB NOCREATEROLE;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_provisioner' AND (rolsuper OR rolbypassrls OR rolreplication)) THEN
        ALTER ROLE tenantd_provisioner NOSUPERUSER NOBYPASSRLS NOREPLICATION;
    END IF;
    IF NOT pg_has_role('tenantd_provisioner', 'tenantd_owner', 'MEMBER') THEN
        GRANT tenantd_owner TO tenantd_provisioner;
    END IF;
    EXECUTE format('GRANT CREATE ON DATABASE %I TO tenantd_owner', current_database());
END
$$;
ALTER ROLE tenantd_provisioner SET statement_timeout = '60s';

ALTER POLICY tenant_isolation ON users
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON api_keys
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON documents
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON audit_events
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON idempotency_records
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));
ALTER POLICY tenant_isolation ON tenant_settings
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));

-- A tenant schema's tables are built from the shared tables' catalog entries, so they match
-- whatever shape the shared tables have when the schema is created: columns, defaults,
-- CHECK constraints, indexes (with their names: errors are mapped by constraint name) and
-- foreign keys (to the schema's own copy when the referenced table is one of `tables`,
-- otherwise to the shared table, e.g. `tenants`). A CHECK pins every row to the tenant.
-- SECURITY INVOKER: it runs as its caller, the provisioner or migrator acting as
-- tenantd_owner, whose schema and tables these become. Callers pass the schema name that
-- tenantd derives from the tenant id.
CREATE FUNCTION tenantd_create_tenant_tables(tenant uuid, target name, tables text[]) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    table_name text;
    source regclass;
    definition text;
    constraint_row record;
    referenced text;
BEGIN
    FOREACH table_name IN ARRAY tables LOOP
        source := format('public.%I', table_name)::regclass;
        EXECUTE format('CREATE TABLE %I.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                       'INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)',
                       target, table_name, table_name);
        FOR constraint_row IN
            SELECT c.conname, c.contype, c.conindid, pg_get_indexdef(c.conindid) AS indexdef
            FROM pg_constraint c WHERE c.conrelid = source AND c.contype IN ('p', 'u') ORDER BY c.conname
        LOOP
            EXECUTE replace(constraint_row.indexdef, format(' ON public.%I USING ', table_name),
                            format(' ON %I.%I USING ', target, table_name));
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s USING INDEX %I', target, table_name,
                           constraint_row.conname,
                           CASE constraint_row.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                           constraint_row.conname);
        END LOOP;
        FOR definition IN
            SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
            WHERE i.indrelid = source
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = source)
            ORDER BY i.indexrelid
        LOOP
            EXECUTE replace(definition, format(' ON public.%I USING ', table_name),
                            format(' ON %I.%I USING ', target, table_name));
        END LOOP;
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I CHECK (tenant_id = %L::uuid)', target, table_name,
                       table_name || '_schema_tenant_check', tenant);
    END LOOP;
    -- Foreign keys last, once every table they may reference exists.
    FOREACH table_name IN ARRAY tables LOOP
        FOR constraint_row IN
            SELECT c.conname, pg_get_constraintdef(c.oid) AS definition, c.confrelid::regclass::text AS target_table
            FROM pg_constraint c WHERE c.conrelid = format('public.%I', table_name)::regclass AND c.contype = 'f'
            ORDER BY c.conname
        LOOP
            definition := constraint_row.definition;
            FOREACH referenced IN ARRAY tables LOOP
                definition := replace(definition, format('REFERENCES public.%I(', referenced),
                                      format('REFERENCES %I.%I(', target, referenced));
            END LOOP;
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', target, table_name, constraint_row.conname,
                           definition);
        END LOOP;
    END LOOP;
END
$fn$;

-- Row-level security and grants of a tenant schema's tables, exactly as the shared tables
-- have them, with the wrapped policy. Idempotent: tenant-schema migrations re-run it.
CREATE FUNCTION tenantd_secure_tenant_tables(target name, tables text[]) RETURNS void
LANGUAGE plpgsql SET search_path = '' AS $fn$
DECLARE
    table_name text;
    wrapped constant text := 'tenant_id = (SELECT nullif(current_setting(''app.tenant_id'', true), '''')::uuid)';
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenantd_app', target);
    FOREACH table_name IN ARRAY tables LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', target, table_name);
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', target, table_name);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I.%I', target, table_name);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I.%I USING (%s) WITH CHECK (%s)', target, table_name,
                       wrapped, wrapped);
        EXECUTE format('REVOKE ALL ON %I.%I FROM PUBLIC', target, table_name);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO tenantd_app', target, table_name);
    END LOOP;
END
$fn$;

REVOKE ALL ON FUNCTION tenantd_create_tenant_tables(uuid, name, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantd_secure_tenant_tables(name, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantd_create_tenant_tables(uuid, name, text[]) TO tenantd_owner;
GRANT EXECUTE ON FUNCTION tenantd_secure_tenant_tables(name, text[]) TO tenantd_owner;
