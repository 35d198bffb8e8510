-- Why: verified purge (issue 14, decision 0020). Purging a tenant is a long-running operation
-- (`purge_tenant`), started by an operator or by the retention sweep, which records itself as
-- `retention`. It ends with a receipt that outlives the tenant: a platform record (no RLS, no
-- `tenant_id` column and no foreign key to anything a purge removes, so the catalog-driven
-- purge and its verification never touch it) saying what was removed, when, by whom, and that
-- a scan of every table with a `tenant_id` column found nothing of the tenant.
--
-- The operation kinds of issue 14 are all listed here (export and import too), so that the
-- archive migration need not change this check again.
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check
    CHECK (kind IN ('move_tenant', 'purge_tenant', 'export_tenant', 'import_tenant'));
ALTER TABLE operations DROP CONSTRAINT operations_created_by_check;
ALTER TABLE operations ADD CONSTRAINT operations_created_by_check
    CHECK (created_by IN ('bootstrap', 'retention') OR created_by LIKE 'operator:%');

CREATE TABLE tenant_purge_receipts (
    -- The operation that purged (one receipt per purge: a restored tenant purged again gets
    -- a second one).
    operation_id uuid PRIMARY KEY,
    -- The purged tenant. Not `tenant_id`: this row is not the tenant's data.
    subject_tenant_id uuid NOT NULL,
    -- `bootstrap`, `operator:<id>` or `retention`, as on the operation.
    purged_by text NOT NULL,
    isolation_tier text NOT NULL CHECK (isolation_tier IN ('pooled', 'schema')),
    start_time timestamptz NOT NULL,
    finish_time timestamptz NOT NULL DEFAULT now(),
    -- {"<schema>.<table>": rows removed, ...}, counted in one snapshot before removal.
    removed_rows jsonb NOT NULL CHECK (jsonb_typeof(removed_rows) = 'object'),
    -- {"status": "removed" | "skipped_unavailable", "keys": n}
    redis jsonb NOT NULL CHECK (jsonb_typeof(redis) = 'object'),
    -- {"tables_scanned": n, "rows_found": 0, "tables": [...], "kept": {...}}
    verification jsonb NOT NULL CHECK (jsonb_typeof(verification) = 'object')
);
CREATE INDEX tenant_purge_receipts_subject_idx ON tenant_purge_receipts (subject_tenant_id, finish_time);

ALTER TABLE tenant_purge_receipts OWNER TO tenantd_owner;
-- The purge writes receipts as tenantd_owner (through the provisioning role); the app role
-- only reads them.
GRANT SELECT ON tenant_purge_receipts TO tenantd_app;

SELECT tenantd_distribute_registry_table('tenant_purge_receipts');
