-- Why: reverts 000014. Tenant schemas are dropped with their tenants' data; the
-- provisioner role is cluster-wide and may serve other databases, so it is left in place
-- (without its database privilege).
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^tenant_[0-9a-f]{32}$' LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', name);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON DATABASE %I FROM tenantd_owner', current_database());
END
$$;

ALTER POLICY tenant_isolation ON users
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
ALTER POLICY tenant_isolation ON api_keys
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
ALTER POLICY tenant_isolation ON documents
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
ALTER POLICY tenant_isolation ON audit_events
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
ALTER POLICY tenant_isolation ON idempotency_records
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
ALTER POLICY tenant_isolation ON tenant_settings
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

DROP FUNCTION tenantd_secure_tenant_tables(name, text[]);
DROP FUNCTION tenantd_create_tenant_tables(uuid, name, text[]);
DELETE FROM tenants WHERE state = 'provisioning';
ALTER TABLE tenants DROP COLUMN schema_version;
ALTER TABLE tenants DROP COLUMN isolation_tier;
ALTER TABLE tenants DROP CONSTRAINT tenants_state_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_state_check CHECK (state IN ('active', 'suspended', 'deleted'));
