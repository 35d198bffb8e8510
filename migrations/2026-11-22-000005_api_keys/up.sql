-- Why: tenant API keys authenticate a tenant's own callers. The key names its tenant, so
-- the lookup runs inside that tenant's transaction and RLS applies like everywhere else.
-- Only the SHA-256 of the secret is stored.
CREATE TABLE api_keys (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    scopes text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'write']::text[] AND cardinality(scopes) > 0),
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz,
    revoke_time timestamptz,
    last_used_time timestamptz,
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE api_keys OWNER TO tenantd_owner;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- Keys are revoked, never deleted: their audit trail must keep resolving.
GRANT SELECT, INSERT, UPDATE ON api_keys TO tenantd_app;
