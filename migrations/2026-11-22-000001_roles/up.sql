-- Why: tenantd connects as a role that owns nothing and cannot bypass row-level security,
-- while a separate NOLOGIN role owns every table. Roles are cluster-wide and may already
-- exist (another database on the same cluster, or an init script that gave the app role a
-- password), so they are created only when missing and their attributes are then pinned.
--
-- The migration role is a superuser, or a role with CREATEROLE that owns this database and
-- may set citus.propagate_set_commands (`tenantd migrate` checks first, and says what is
-- missing; docs/decisions/0010-dev-server-and-migration-role.md). This text was changed
-- after release to allow the latter; databases migrated before never run it again (diesel
-- records only versions), and with a superuser it leaves the same roles and grants as before.
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

ALTER ROLE tenantd_owner NOLOGIN NOCREATEDB NOCREATEROLE;
ALTER ROLE tenantd_app LOGIN NOCREATEDB NOCREATEROLE NOINHERIT;
-- Only a superuser may name SUPERUSER, BYPASSRLS or REPLICATION at all (PostgreSQL 15), so
-- they are pinned only when a role has one of them, which a role created above never has:
-- then a superuser migrator takes them away, and any other fails here, as it must.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_owner' AND (rolsuper OR rolbypassrls)) THEN
        ALTER ROLE tenantd_owner NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantd_app' AND (rolsuper OR rolbypassrls OR rolreplication)) THEN
        ALTER ROLE tenantd_app NOSUPERUSER NOBYPASSRLS NOREPLICATION;
    END IF;
END
$$;

-- A migration role that is not a superuser gives the tables to tenantd_owner
-- (ALTER TABLE ... OWNER TO), which takes membership in it, and a new owner needs CREATE on
-- the schema (superusers skip both checks). tenantd_owner cannot log in (outside Citus,
-- where it gets the same grant for shard moves) and tenantd_app is not a member of it.
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN;
    END IF;
    IF NOT pg_has_role(current_user, 'tenantd_owner', 'USAGE') THEN
        EXECUTE format('GRANT tenantd_owner TO %I', current_user);
    END IF;
    GRANT CREATE ON SCHEMA public TO tenantd_owner;
END
$$;

-- A runaway query or a client that vanished mid-transaction must not hold locks or a
-- connection for long.
ALTER ROLE tenantd_app SET statement_timeout = '5s';
ALTER ROLE tenantd_app SET idle_in_transaction_session_timeout = '10s';

-- Nobody but the migration role creates objects in this schema.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO tenantd_app;

-- Readiness checks, as the app role, that the applied migrations are current.
GRANT SELECT ON __diesel_schema_migrations TO tenantd_app;
