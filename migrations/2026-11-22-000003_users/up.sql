-- Why: the first tenant-scoped table. PostgreSQL itself isolates tenants here: RLS is
-- enabled and forced (so even the owner is subject to it), and the one policy compares
-- against the transaction-local `app.tenant_id`. When the setting is missing (NULL) or
-- reset by a pooled connection (''), nullif(...)::uuid is NULL and no row matches.
CREATE TABLE users (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    display_name text NOT NULL DEFAULT '' CHECK (length(display_name) <= 200),
    role text NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every update; the etag is derived from it.
    revision bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);

-- Emails are unique per tenant regardless of case; the same email in two tenants is fine.
CREATE UNIQUE INDEX users_tenant_id_email_key ON users (tenant_id, lower(email));

ALTER TABLE users OWNER TO tenantd_owner;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON users TO tenantd_app;
