-- Why: an all-tenants watcher's sweep read every tenant's events, each in its own tenant
-- transaction, so each sweep grew with the number of tenants, not with the number of
-- events (issue 13). audit_events is under RLS, so no query may look across tenants; this
-- index says only which tenants a transaction wrote events for (no event content), so it
-- is a registry table without RLS (decision 0015, "Finding the tenants with new events").
-- A trigger fills it in the writing transaction itself: it is exactly as complete as
-- audit_events, committed or rolled back with it.
--
-- Events written before this migration are not indexed (RLS keeps a migration that is not
-- run by a superuser from reading them); event_index_start records where the index
-- begins, and readers fall back to every tenant below it. The lock makes every
-- transaction that writes events after that point find the trigger in place.
LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE event_index_start (
    transaction_id bigint NOT NULL,
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);
INSERT INTO event_index_start (transaction_id) VALUES (pg_current_xact_id()::text::bigint);
ALTER TABLE event_index_start OWNER TO tenantd_owner;
GRANT SELECT ON event_index_start TO tenantd_app;
SELECT tenantd_distribute_registry_table('event_index_start');

CREATE TABLE event_transactions (
    transaction_id bigint NOT NULL,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    PRIMARY KEY (tenant_id, transaction_id)
);
-- The sweep's question: which tenants wrote events in a range of transactions.
CREATE INDEX event_transactions_transaction_id_idx ON event_transactions (transaction_id);
ALTER TABLE event_transactions OWNER TO tenantd_owner;
GRANT SELECT, INSERT ON event_transactions TO tenantd_app;
SELECT tenantd_distribute_tenant_table('event_transactions');

-- Runs as the inserting role (not SECURITY DEFINER): the app role, which may insert here.
CREATE FUNCTION tenantd_index_event_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_transactions (transaction_id, tenant_id)
    VALUES (NEW.transaction_id, NEW.tenant_id)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_events_index_transaction AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION tenantd_index_event_transaction();
