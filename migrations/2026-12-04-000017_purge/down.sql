DELETE FROM tenantd_table_distribution WHERE table_name = 'tenant_purge_receipts'::regclass;
DROP TABLE tenant_purge_receipts;
DELETE FROM operations WHERE kind <> 'move_tenant' OR created_by = 'retention';
ALTER TABLE operations DROP CONSTRAINT operations_created_by_check;
ALTER TABLE operations ADD CONSTRAINT operations_created_by_check
    CHECK (created_by = 'bootstrap' OR created_by LIKE 'operator:%');
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN ('move_tenant'));
