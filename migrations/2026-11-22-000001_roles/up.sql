-- Why: tenantd connects as a role that owns nothing and cannot bypass row-level security,
-- while a separate NOLOGIN role owns every table. Roles are cluster-wide and may already
-- exist (another database on the same cluster, or an init script that gave the app role a
-- password), so they are created only when missing and their attributes are then pinned.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_owner') THEN
        CREATE ROLE tenantd_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_app') THEN
        CREATE ROLE tenantd_app LOGIN;
    END IF;
EXCEPTION
    -- Another database's migration created the role between our check and our CREATE.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

ALTER ROLE tenantd_owner NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
ALTER ROLE tenantd_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION;

-- A runaway query or a client that vanished mid-transaction must not hold locks or a
-- connection for long.
ALTER ROLE tenantd_app SET statement_timeout = '5s';
ALTER ROLE tenantd_app SET idle_in_transaction_session_timeout = '10s';

-- Nobody but the migration role creates objects in this schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO tenantd_app;

-- Readiness checks, as the app role, that the applied migrations are current.
GRANT SELECT ON __diesel_schema_migrations TO tenantd_app;
