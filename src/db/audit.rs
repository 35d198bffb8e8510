//! Repository of the tenant-scoped, append-only `audit_events` table.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::audit_events;
pub use super::tenant_tx::AuditActor;
use super::tenant_tx::{TenantQuery, TenantTx};

/// An audit event, as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg))]
pub struct AuditEvent {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Id (UUIDv7, so ids order by time).
    pub id: Uuid,
    /// When.
    pub create_time: DateTime<Utc>,
    /// `platform` or `api_key`.
    pub actor_type: String,
    /// Key id or empty.
    pub actor_id: String,
    /// E.g. `user.create`.
    pub action: String,
    /// E.g. `user`.
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// The request's id.
    pub request_id: String,
    /// A small JSON object.
    pub details: serde_json::Value,
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewAuditEvent<'a> {
    /// `platform` or `api_key`.
    pub actor_type: &'a str,
    /// Key id or empty.
    pub actor_id: String,
    /// E.g. `user.create`.
    pub action: &'a str,
    /// E.g. `user`.
    pub resource_type: &'a str,
    /// The resource's id.
    pub resource_id: String,
    /// The request's id.
    pub request_id: &'a str,
    /// A small JSON object.
    pub details: serde_json::Value,
}

/// Appends an event to the transaction's tenant.
pub async fn insert(transaction: &mut TenantTx<'_>, event: NewAuditEvent<'_>) -> QueryResult<()> {
    let tenant_id = transaction.tenant_id();
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::tenant_id.eq(tenant_id),
            audit_events::id.eq(Uuid::now_v7()),
            audit_events::actor_type.eq(event.actor_type),
            audit_events::actor_id.eq(event.actor_id),
            audit_events::action.eq(event.action),
            audit_events::resource_type.eq(event.resource_type),
            audit_events::resource_id.eq(event.resource_id),
            audit_events::request_id.eq(event.request_id),
            audit_events::details.eq(event.details),
        ))
        .execute(transaction.connection())
        .await?;
    transaction.note_event_recorded();
    Ok(())
}

/// Appends an event for `tenant_id` on a connection of the provisioning role, inside its
/// open transaction (a tenant move's cutover, which must record the tier change with it).
pub async fn insert_as_owner(
    connection: &mut diesel_async::AsyncPgConnection,
    tenant_id: Uuid,
    event: NewAuditEvent<'_>,
) -> QueryResult<()> {
    diesel::insert_into(audit_events::table)
        .values((
            audit_events::tenant_id.eq(tenant_id),
            audit_events::id.eq(Uuid::now_v7()),
            audit_events::actor_type.eq(event.actor_type),
            audit_events::actor_id.eq(event.actor_id),
            audit_events::action.eq(event.action),
            audit_events::resource_type.eq(event.resource_type),
            audit_events::resource_id.eq(event.resource_id),
            audit_events::request_id.eq(event.request_id),
            audit_events::details.eq(event.details),
        ))
        .execute(connection)
        .await?;
    Ok(())
}

/// Filters of a listing; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Resource type.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// At or after.
    pub start_time: Option<DateTime<Utc>>,
    /// Before.
    pub end_time: Option<DateTime<Utc>>,
}

/// One page of the tenant's events, newest first, before a cursor.
pub fn list<'c>(
    on: impl TenantQuery<'c>,
    query: AuditQuery,
    before: Option<Uuid>,
    limit: i64,
) -> BoxFuture<'c, QueryResult<Vec<AuditEvent>>> {
    let tenant_id = on.tenant_id();
    let mut select = audit_events::table
        .filter(audit_events::tenant_id.eq(tenant_id))
        .order(audit_events::id.desc())
        .limit(limit)
        .select(AuditEvent::as_select())
        .into_boxed();
    if let Some(before) = before {
        select = select.filter(audit_events::id.lt(before));
    }
    if let Some(resource_type) = query.resource_type {
        select = select.filter(audit_events::resource_type.eq(resource_type));
    }
    if let Some(resource_id) = query.resource_id {
        select = select.filter(audit_events::resource_id.eq(resource_id));
    }
    if let Some(start_time) = query.start_time {
        select = select.filter(audit_events::create_time.ge(start_time));
    }
    if let Some(end_time) = query.end_time {
        select = select.filter(audit_events::create_time.lt(end_time));
    }
    on.load(select)
}
