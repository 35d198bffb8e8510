-- Why: edge gateways identify tenants by domain and by external channel workspace (for
-- example a Slack team). These are registry indexes, read before any tenant is known, so,
-- like `tenants`, they are global tables without RLS; each value belongs to at most one
-- tenant across the whole registry. They hold no tenant data.
CREATE TABLE tenant_domains (
    domain text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    tenant_id uuid NOT NULL REFERENCES tenants (id)
);
CREATE INDEX tenant_domains_tenant_id_idx ON tenant_domains (tenant_id);

CREATE TABLE tenant_channel_bindings (
    channel_type text NOT NULL CHECK (channel_type ~ '^[a-z][a-z0-9_-]{0,31}$'),
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (channel_type, external_id)
);
CREATE INDEX tenant_channel_bindings_tenant_id_idx ON tenant_channel_bindings (tenant_id);

ALTER TABLE tenant_domains OWNER TO tenantd_owner;
ALTER TABLE tenant_channel_bindings OWNER TO tenantd_owner;
GRANT SELECT, INSERT, DELETE ON tenant_domains, tenant_channel_bindings TO tenantd_app;
