-- Why: reverts 000021; the sweep then reads every tenant again.
DROP TRIGGER audit_events_index_transaction ON audit_events;
DROP FUNCTION tenantd_index_event_transaction();
DELETE FROM tenantd_table_distribution WHERE table_name IN ('event_transactions'::regclass, 'event_index_start'::regclass);
DROP TABLE event_transactions;
DROP TABLE event_index_start;
