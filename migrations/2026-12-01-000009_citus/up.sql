-- Why: the same migrations must run on plain PostgreSQL and on a Citus cluster. With the
-- citus extension, this distributes the tables: the registry tables (their unique keys do
-- not include tenant_id) become reference tables, copied to every node; the tenant tables
-- are distributed by tenant_id and colocated with users, so all of one tenant's rows live
-- on one node and a tenant transaction touches one node. Without citus, nothing moves:
-- every table's distribution is only recorded, so a test can prove none was left out.
-- Citus functions are named only inside EXECUTE: plain PostgreSQL never parses them.
-- It all happens in this migration's transaction, with the data present.

-- Citus forwards a transaction's `SET LOCAL app.tenant_id` to the workers only with this
-- setting; set_config() never reaches them. Plain PostgreSQL keeps it as a placeholder, so
-- the app role is configured the same everywhere and readiness can check it. Like the
-- role's other settings (2026-11-22-000001_roles), it holds in every database.
ALTER ROLE tenantd_app SET citus.propagate_set_commands = 'local';

-- How every table of the schema is distributed on a cluster ('reference' or 'tenant'),
-- recorded with or without citus. tests/api/citus.rs fails if a table is missing.
-- This table and the two functions stay owned by the migration role, unlike the tenant
-- tables: on a cluster tenantd_owner can log in (decision 0008), and a trigger or function
-- body it controlled would run as the migration role whenever a migration called them.
CREATE TABLE tenantd_table_distribution (
    table_name regclass PRIMARY KEY,
    distribution text NOT NULL CHECK (distribution IN ('reference', 'tenant'))
);

-- The only way a table joins the cluster, in this migration and every later one: a new
-- registry table calls tenantd_distribute_registry_table, a new tenant table
-- tenantd_distribute_tenant_table, right after its CREATE TABLE and its grants.
CREATE FUNCTION tenantd_distribute_registry_table(relation regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenantd_table_distribution (table_name, distribution) VALUES (relation, 'reference');
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT create_reference_table($1)' USING relation;
    END IF;
END
$$;

CREATE FUNCTION tenantd_distribute_tenant_table(relation regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenantd_table_distribution (table_name, distribution) VALUES (relation, 'tenant');
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    -- users anchors the colocation group; every other tenant table joins it.
    IF relation = 'users'::regclass THEN
        EXECUTE 'SELECT create_distributed_table($1, ''tenant_id'')' USING relation;
    ELSE
        EXECUTE 'SELECT create_distributed_table($1, ''tenant_id'', colocate_with => ''users'')' USING relation;
    END IF;
END
$$;

-- Migrations only: the app role never changes the schema.
REVOKE EXECUTE ON FUNCTION tenantd_distribute_registry_table(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tenantd_distribute_tenant_table(regclass) FROM PUBLIC;

-- The order Citus needs (measured on Citus 13.2): reference tables first, tenants before
-- the tables that reference it.
SELECT tenantd_distribute_registry_table('tenants');
SELECT tenantd_distribute_registry_table('tenant_domains');
SELECT tenantd_distribute_registry_table('tenant_channel_bindings');
SELECT tenantd_distribute_registry_table('platform_idempotency_records');

-- Citus cannot distribute users while a table that is not yet distributed references it:
-- the owner foreign key goes, and comes back once documents is colocated with users.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'ALTER TABLE documents DROP CONSTRAINT documents_owner_fkey';
    END IF;
END
$$;

SELECT tenantd_distribute_tenant_table('users');
SELECT tenantd_distribute_tenant_table('api_keys');
SELECT tenantd_distribute_tenant_table('documents');
SELECT tenantd_distribute_tenant_table('audit_events');
SELECT tenantd_distribute_tenant_table('idempotency_records');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'ALTER TABLE documents ADD CONSTRAINT documents_owner_fkey '
            'FOREIGN KEY (tenant_id, owner_user_id) REFERENCES users (tenant_id, id)';
        -- Shard moves connect to the nodes as the table owner and create shards as it
        -- (docs/decisions/0008-citus-shard-owner.md). The owner has no password until the
        -- operator gives it one, and pg_hba is to admit it only from the nodes. Set on every
        -- run, because 2026-11-22-000001_roles pins NOLOGIN again whenever another database
        -- of the cluster is migrated.
        EXECUTE 'ALTER ROLE tenantd_owner LOGIN';
        EXECUTE 'GRANT CREATE ON SCHEMA public TO tenantd_owner';
    END IF;
END
$$;
