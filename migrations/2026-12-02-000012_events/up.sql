-- Why: audit_events is also the outbox of the event stream (WatchEvents, decision 0015).
-- Each event records the id of the transaction that wrote it (pg_current_xact_id(), as a
-- bigint so that it is an ordinary ordered column). A reader delivers only events whose
-- transaction is older than its snapshot's xmin: every such transaction has ended, so the
-- set of events below that bound can no longer grow, even though transactions commit out
-- of id order. The cursor of the stream is (transaction_id, id).
--
-- The default is evaluated by the inserting transaction itself (the app role sends no
-- value). Existing rows get the migration's own transaction id: older than any later write.
ALTER TABLE audit_events
    ADD COLUMN transaction_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);

-- Reading a tenant's events in stream order after a cursor.
CREATE INDEX audit_events_tenant_id_transaction_id_idx ON audit_events (tenant_id, transaction_id, id);
