//! Reads of the event stream: `audit_events` in stream order, `(transaction_id, id)`
//! (decision 0015), and the snapshot bound below which that order is final.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::Connection;
use super::audit::AuditEvent;
use super::schema::{audit_events, event_index_start, event_transactions, tenants};
use super::tenant_tx::TenantQuery;

/// An audit event with the id of the transaction that wrote it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
pub struct StreamEvent {
    /// `pg_current_xact_id()` of the writing transaction.
    pub transaction_id: i64,
    /// The event.
    #[diesel(embed)]
    pub event: AuditEvent,
}

/// Which events of a tenant to read: after a position, below a bound, optionally of some
/// event types (actions) and resource types only.
#[derive(Debug, Clone, Default)]
pub struct StreamQuery {
    /// Only events after this `(transaction_id, id)`.
    pub after: (i64, Uuid),
    /// Only events of transactions older than this (a snapshot's xmin).
    pub below: i64,
    /// Only these actions; `None` does not filter.
    pub event_types: Option<Vec<String>>,
    /// Only these resource types; `None` does not filter.
    pub resource_types: Option<Vec<String>>,
}

/// The tenant's events of `query`, in stream order, at most `limit`.
pub fn after<'c>(
    on: impl TenantQuery<'c>,
    query: StreamQuery,
    limit: i64,
) -> BoxFuture<'c, QueryResult<Vec<StreamEvent>>> {
    let tenant_id = on.tenant_id();
    let (after_transaction, after_id) = query.after;
    let mut select = audit_events::table
        .filter(audit_events::tenant_id.eq(tenant_id))
        // The range first, so that the index (tenant_id, transaction_id, id) bounds the scan.
        .filter(audit_events::transaction_id.ge(after_transaction))
        .filter(audit_events::transaction_id.lt(query.below))
        // A row comparison, so that the index bounds the scan inside one large transaction too
        // (`transaction_id > $1 OR id > $2` would scan that transaction's events from its start).
        .filter(
            diesel::dsl::sql::<Bool>("(audit_events.transaction_id, audit_events.id) > (")
                .bind::<BigInt, _>(after_transaction)
                .sql(", ")
                .bind::<diesel::sql_types::Uuid, _>(after_id)
                .sql(")"),
        )
        .order((audit_events::transaction_id.asc(), audit_events::id.asc()))
        .limit(limit)
        .select(StreamEvent::as_select())
        .into_boxed();
    if let Some(event_types) = query.event_types {
        select = select.filter(audit_events::action.eq_any(event_types));
    }
    if let Some(resource_types) = query.resource_types {
        select = select.filter(audit_events::resource_type.eq_any(resource_types));
    }
    on.load(select)
}

/// The transaction id of the tenant's first event (in stream order) created at or after
/// `since`, if any.
pub fn first_since<'c>(on: impl TenantQuery<'c>, since: DateTime<Utc>) -> BoxFuture<'c, QueryResult<Option<i64>>> {
    let tenant_id = on.tenant_id();
    let select = audit_events::table
        .filter(audit_events::tenant_id.eq(tenant_id))
        .filter(audit_events::create_time.ge(since))
        .order((audit_events::transaction_id.asc(), audit_events::id.asc()))
        .select(audit_events::transaction_id)
        .limit(1);
    on.optional(select)
}

/// The bounds of a fresh snapshot: `xmin` (every transaction with a smaller id has ended)
/// and `xmax` (no transaction with this id or a larger one had started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBounds {
    /// `pg_snapshot_xmin(pg_current_snapshot())`.
    pub xmin: i64,
    /// `pg_snapshot_xmax(pg_current_snapshot())`.
    pub xmax: i64,
}

/// The bounds of the current snapshot. Needs no tenant: it reads no table.
pub async fn snapshot_bounds(connection: &mut Connection<'_>) -> QueryResult<SnapshotBounds> {
    let (xmin, xmax) = diesel::select((
        diesel::dsl::sql::<BigInt>("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"),
        diesel::dsl::sql::<BigInt>("pg_snapshot_xmax(pg_current_snapshot())::text::bigint"),
    ))
    .get_result::<(i64, i64)>(connection)
    .await?;
    Ok(SnapshotBounds { xmin, xmax })
}

/// The id of every tenant in the registry (whose events an all-tenants watcher reads,
/// each in its own tenant transaction).
pub async fn tenant_ids(connection: &mut Connection<'_>) -> QueryResult<Vec<Uuid>> {
    tenants::table.select(tenants::id).order(tenants::id.asc()).load(connection).await
}

/// The first transaction id whose events the event index covers: events of older
/// transactions were written before the index existed.
pub async fn event_index_start(connection: &mut Connection<'_>) -> QueryResult<i64> {
    event_index_start::table.select(event_index_start::transaction_id).first(connection).await
}

/// Every tenant that transactions in `[from, below)` wrote events for, from the event index
/// (complete for `from` at or after [`event_index_start`]). Needs no tenant: the index is a
/// registry table.
pub async fn tenants_with_events(connection: &mut Connection<'_>, from: i64, below: i64) -> QueryResult<Vec<Uuid>> {
    event_transactions::table
        .filter(event_transactions::transaction_id.ge(from))
        .filter(event_transactions::transaction_id.lt(below))
        .select(event_transactions::tenant_id)
        .distinct()
        .load(connection)
        .await
}

/// Which of `ids` are in the registry (in any state).
pub async fn known_tenants(connection: &mut Connection<'_>, ids: &[Uuid]) -> QueryResult<Vec<Uuid>> {
    tenants::table.filter(tenants::id.eq_any(ids)).select(tenants::id).load(connection).await
}
