-- Why: an audit trail of every mutation on both planes, written in the mutation's own
-- transaction (both commit or neither does). It is append-only for the app role: there is no
-- UPDATE or DELETE grant, so not even a compromised server can rewrite history.
CREATE TABLE audit_events (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    actor_type text NOT NULL CHECK (actor_type IN ('platform', 'api_key')),
    actor_id text NOT NULL DEFAULT '',
    action text NOT NULL,
    resource_type text NOT NULL,
    resource_id text NOT NULL,
    request_id text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(details) = 'object'),
    PRIMARY KEY (tenant_id, id)
);

-- Listing by time, optionally by resource.
CREATE INDEX audit_events_tenant_id_resource_idx ON audit_events (tenant_id, resource_type, resource_id, id);

ALTER TABLE audit_events OWNER TO tenantd_owner;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT ON audit_events TO tenantd_app;
