-- Why: exactly-once creates (AIP-155). A create with a request_id records it here in the
-- create's own transaction, so the record survives a Redis restart and a concurrent retry
-- waits on the primary key until the first attempt commits or rolls back. Records are
-- per tenant; creates of tenants themselves use the platform table below.
CREATE TABLE idempotency_records (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    request_id uuid NOT NULL,
    method text NOT NULL,
    request_sha256 bytea NOT NULL CHECK (length(request_sha256) = 32),
    response jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX idempotency_records_tenant_id_create_time_idx ON idempotency_records (tenant_id, create_time);

ALTER TABLE idempotency_records OWNER TO tenantd_owner;
ALTER TABLE idempotency_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency_records
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_records TO tenantd_app;

-- CreateTenant has no tenant yet: its records are global, like the registry.
CREATE TABLE platform_idempotency_records (
    request_id uuid PRIMARY KEY,
    method text NOT NULL,
    request_sha256 bytea NOT NULL CHECK (length(request_sha256) = 32),
    response jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_idempotency_records_create_time_idx ON platform_idempotency_records (create_time);
ALTER TABLE platform_idempotency_records OWNER TO tenantd_owner;
GRANT SELECT, INSERT, UPDATE, DELETE ON platform_idempotency_records TO tenantd_app;
