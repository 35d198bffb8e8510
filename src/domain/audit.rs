//! The audit trail: every mutation records one event in its own transaction.

use serde_json::{Value, json};

use super::page::{PageToken, fingerprint};
use crate::db::audit::NewAuditEvent;
pub use crate::db::audit::{AuditEvent, AuditQuery as AuditFilter};
use crate::db::tenant_tx::TenantTx;
use crate::error::{Error, Reason, Result};
use crate::tenancy::{TenantContext, TenantDb};

/// Appends an event for the transaction's tenant and request. Call inside the mutation's
/// transaction, after the change: if the insert fails, the mutation rolls back with it.
pub async fn record(
    transaction: &mut TenantTx<'_>,
    action: &str,
    resource_type: &str,
    resource_id: impl ToString,
    details: Value,
) -> Result<()> {
    let actor = transaction.actor().clone();
    let event = NewAuditEvent {
        actor_type: actor.actor_type,
        actor_id: actor.actor_id,
        action,
        resource_type,
        resource_id: resource_id.to_string(),
        request_id: &actor.request_id,
        details,
    };
    crate::db::audit::insert(transaction, event)
        .await
        .map_err(|error| crate::error::from_database(error, constraint_error))?;
    Ok(())
}

/// What a violated constraint means when an event is recorded; `None` for a constraint this
/// module does not expect (INTERNAL). Event ids are generated (UUIDv7), so a taken one is
/// answered like any other taken id. Public so that tests/api/citus.rs can check every
/// constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "audit_events_pkey" => Some(Error::already_exists(Reason::AuditEventAlreadyExists, "audit_event.id")),
        "audit_events_tenant_id_fkey" | "event_transactions_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        // The event index is written by a trigger of every audit insert, `ON CONFLICT DO
        // NOTHING`: its key cannot be violated, and would be the audit write's if it were.
        "event_transactions_pkey" => Some(Error::already_exists(Reason::AuditEventAlreadyExists, "audit_event.id")),
        _ => None,
    }
}

/// A JSON object listing the names of the fields an update changed.
pub fn changed_fields(fields: &[&str]) -> Value {
    json!({ "changed_fields": fields })
}

/// One page of events.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The events, newest first.
    pub events: Vec<AuditEvent>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// Lists the context's tenant's events, newest first.
pub async fn list(
    database: &TenantDb,
    context: &TenantContext,
    filter: AuditFilter,
    page_size: i64,
    page_token: &str,
) -> Result<AuditPage> {
    if filter.resource_id.is_some() && filter.resource_type.is_none() {
        return Err(Error::invalid(
            Reason::FieldRequired,
            "filter.resource_type",
            "is required with filter.resource_id",
        ));
    }
    let scope = context.tenant_id();
    let filter_print = fingerprint(&format!(
        "{:?}|{:?}|{:?}|{:?}",
        filter.resource_type, filter.resource_id, filter.start_time, filter.end_time
    ));
    let before = PageToken::decode(page_token, scope, filter_print)?;

    let mut rows = database
        .read(context, async move |read| Ok(crate::db::audit::list(read, filter.clone(), before, page_size + 1).await?))
        .await?;
    let next_page_token = super::page::next_token(&mut rows, page_size, |row| row.id, scope, filter_print);
    Ok(AuditPage { events: rows, next_page_token })
}
