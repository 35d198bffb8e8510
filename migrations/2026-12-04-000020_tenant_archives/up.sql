-- Why: a tenant's archive (issue 14, decision 0021) is written by the export_tenant
-- operation and downloaded later (ReadTenantArchive), and an uploaded archive (ImportTenant)
-- is kept while it is verified and applied, so the bytes must outlive the RPC and the
-- replica: they are stored as chunks of at most 1 MiB, in order. Chunks are tenant data: they
-- carry tenant_id (the exported tenant, or the import's target), row-level security is
-- forced under the wrapped policy like every tenant table, and a purge (which removes every
-- row of every table with a tenant_id column) removes them. No foreign key to tenants: an
-- upload is stored before its target tenant exists. archive_id is the export's operation id,
-- or the upload's id; chunk 0 is the manifest's chunk of an export, written last.
CREATE TABLE tenant_archive_chunks (
    tenant_id uuid NOT NULL,
    archive_id uuid NOT NULL,
    sequence integer NOT NULL CHECK (sequence >= 0),
    bytes bytea NOT NULL CHECK (octet_length(bytes) BETWEEN 1 AND 1048576),
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, archive_id, sequence)
);

ALTER TABLE tenant_archive_chunks OWNER TO tenantd_owner;
ALTER TABLE tenant_archive_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_archive_chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_archive_chunks
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid));

GRANT SELECT, INSERT, DELETE ON tenant_archive_chunks TO tenantd_app;

SELECT tenantd_distribute_tenant_table('tenant_archive_chunks');

-- The new operation kinds (purge_tenant is the purge's, decision 0020: listed here too so
-- that the constraint is right whichever of the two migrations runs last).
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
    CHECK (kind IN ('move_tenant', 'purge_tenant', 'export_tenant', 'import_tenant'));
