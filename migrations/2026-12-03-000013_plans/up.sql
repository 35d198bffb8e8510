-- Why: plans, the named sets of limits platform teams sell (issue 12). A plan belongs to no
-- tenant: like the tenant registry it is a global table without RLS (a reference table on
-- Citus), read with the tenant's row by the resolver's one query. Its name is its
-- identifier for people (immutable, like a slug), so tenants reference it by name; the id
-- (UUIDv7) orders pages. Limits and the
-- plan's setting defaults are JSON objects validated by tenantd (every limit optional:
-- absent means unlimited). Plans are never deleted, so the app role gets no DELETE grant.
-- Who created and who last changed a plan is recorded on the row (`bootstrap` or
-- `operator:<id>`), as for operators: no tenant's audit trail could hold it.
CREATE TABLE plans (
    id uuid PRIMARY KEY,
    name text NOT NULL CONSTRAINT plans_name_key UNIQUE
        CONSTRAINT plans_name_format CHECK (name ~ '^[a-z][a-z0-9-]{2,62}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    limits jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(limits) = 'object'),
    settings jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    create_time timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL CHECK (created_by = 'bootstrap' OR created_by LIKE 'operator:%'),
    update_time timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL CHECK (updated_by = 'bootstrap' OR updated_by LIKE 'operator:%'),
    revision bigint NOT NULL DEFAULT 1
);

ALTER TABLE plans OWNER TO tenantd_owner;
GRANT SELECT, INSERT, UPDATE ON plans TO tenantd_app;

SELECT tenantd_distribute_registry_table('plans');

-- A tenant has at most one plan (none: unlimited) and its own overrides of the plan's limits.
ALTER TABLE tenants ADD COLUMN plan text CONSTRAINT tenants_plan_fkey REFERENCES plans (name);
ALTER TABLE tenants ADD COLUMN limit_overrides jsonb NOT NULL DEFAULT '{}'::jsonb
    CONSTRAINT tenants_limit_overrides_object CHECK (jsonb_typeof(limit_overrides) = 'object');
-- A change to a plan invalidates the cached records of the tenants on it.
CREATE INDEX tenants_plan_idx ON tenants (plan);

-- Why: exact quotas. One counter row per tenant and counted resource, changed in the same
-- transaction as the create or delete it counts: `used + n <= cap` is checked by the
-- statement that increments it, under the row's lock, so concurrent creates cannot
-- overshoot a cap. Counting happens whether or not a cap is set, so that a cap set later
-- starts from the true count.
CREATE TABLE tenant_quota_usage (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    quota text NOT NULL CHECK (quota IN ('users', 'documents', 'document_bytes', 'api_keys')),
    used bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (tenant_id, quota)
);

ALTER TABLE tenant_quota_usage OWNER TO tenantd_owner;
ALTER TABLE tenant_quota_usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_quota_usage FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_quota_usage
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON tenant_quota_usage TO tenantd_app;

SELECT tenantd_distribute_tenant_table('tenant_quota_usage');

-- The counts of what exists already (migrations run as the owner of the tables, past RLS).
INSERT INTO tenant_quota_usage (tenant_id, quota, used)
SELECT tenant_id, 'users', count(*) FROM users GROUP BY tenant_id
UNION ALL
SELECT tenant_id, 'documents', count(*) FROM documents GROUP BY tenant_id
UNION ALL
SELECT tenant_id, 'document_bytes', sum(octet_length(content)) FROM documents GROUP BY tenant_id
UNION ALL
SELECT tenant_id, 'api_keys', count(*) FROM api_keys WHERE revoke_time IS NULL GROUP BY tenant_id;
