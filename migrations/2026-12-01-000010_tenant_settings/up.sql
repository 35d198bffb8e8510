-- Why: tenant settings, typed values (flags, numbers, text) a tenant's services read over
-- the data plane: the first resource built with the resource kit; plans will add defaults
-- beneath them. Keys are unique per tenant; the value is a JSON scalar, so its kind
-- survives the round trip.
CREATE TABLE tenant_settings (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    key text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    value jsonb NOT NULL CHECK (jsonb_typeof(value) IN ('boolean', 'number', 'string')),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    revision bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);

CREATE UNIQUE INDEX tenant_settings_tenant_id_key_key ON tenant_settings (tenant_id, key);

ALTER TABLE tenant_settings OWNER TO tenantd_owner;
ALTER TABLE tenant_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_settings
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_settings TO tenantd_app;

SELECT tenantd_distribute_tenant_table('tenant_settings');
