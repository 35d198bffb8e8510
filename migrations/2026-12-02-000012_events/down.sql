-- Why: undoes 2026-12-02-000012_events (the event stream's transaction ids).
DROP INDEX audit_events_tenant_id_transaction_id_idx;
ALTER TABLE audit_events DROP COLUMN transaction_id;
