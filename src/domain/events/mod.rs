//! Tenant events: the audit trail as a resumable stream (decision 0015).
//!
//! The stream is `audit_events` in the order `(transaction_id, id)`, where
//! `transaction_id` is the writing transaction's `pg_current_xact_id()`. Only events of
//! transactions older than a snapshot's xmin are delivered: those transactions have all
//! ended, so nothing can later appear before a position already delivered, however the
//! transactions interleaved their commits. A position is one point of that single order
//! for every tenant, so one cursor serves a watcher of one tenant or of all of them.
//!
//! - [`cursor`]: positions and the opaque cursors clients hold;
//! - [`hub`]: one per server; sweeps new events once for every watcher of the process,
//!   woken by commits (in this process, and through Redis from the other replicas) and by
//!   a periodic poll;
//! - [`watch`]: one task per WatchEvents stream, with a bounded buffer.

pub mod cursor;
pub mod hub;
pub mod watch;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::cursor::{Cursor, Position};
pub use self::hub::EventHub;
use crate::db::events::StreamEvent;
use crate::error::{Error, Reason, Result, Violations};

/// Whose events a watcher receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSet {
    /// Every tenant, including those created later (platform callers only).
    All,
    /// These tenants.
    Only(BTreeSet<Uuid>),
}

impl TenantSet {
    /// Whether `tenant_id` is in the set.
    pub fn contains(&self, tenant_id: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::Only(tenants) => tenants.contains(&tenant_id),
        }
    }
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With events committed from now on.
    Now,
    /// Just after a cursor.
    After(Cursor),
    /// With the events created at or after a time.
    Since(DateTime<Utc>),
}

/// Filters of a watch; `None` does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Event types (audit actions such as `user.update`).
    pub event_types: Option<Vec<String>>,
    /// Resource types (such as `user`).
    pub resource_types: Option<Vec<String>>,
}

impl EventFilter {
    /// Validates the lists of a request: each value 1 to 64 of `[a-z_.]`, at most 32 of each.
    pub fn parse(event_types: Vec<String>, resource_types: Vec<String>) -> Result<Self> {
        let mut violations = Violations::new();
        let mut list = |field: &str, values: Vec<String>| {
            if values.len() > 32 {
                violations.add(Reason::EventFilterInvalid, field, "must hold at most 32 values");
                return None;
            }
            for (index, value) in values.iter().enumerate() {
                let valid = (1..=64).contains(&value.len())
                    && value.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_' || byte == b'.');
                if !valid {
                    violations.add(
                        Reason::EventFilterInvalid,
                        format!("{field}[{index}]"),
                        "must be 1 to 64 of [a-z_.]",
                    );
                }
            }
            (!values.is_empty()).then_some(values)
        };
        let event_types = list("event_types", event_types);
        let resource_types = list("resource_types", resource_types);
        violations.finish(|| Some(Self { event_types, resource_types }))
    }

    /// Whether an event passes the filter.
    pub fn matches(&self, event: &StreamEvent) -> bool {
        let passes = |values: &Option<Vec<String>>, value: &str| {
            values.as_ref().is_none_or(|values| values.iter().any(|allowed| allowed == value))
        };
        passes(&self.event_types, &event.event.action) && passes(&self.resource_types, &event.event.resource_type)
    }
}

/// What a watcher asked for, validated.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Whose events.
    pub tenants: TenantSet,
    /// Which events.
    pub filter: EventFilter,
    /// From where.
    pub start: Start,
}

/// One message of a stream: events in stream order, and the cursor after them.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// The events, each with its position.
    pub events: Vec<StreamEvent>,
    /// Resume point after the batch.
    pub cursor: Cursor,
}

/// The position of a stored event.
pub fn position_of(event: &StreamEvent) -> Position {
    Position { transaction_id: event.transaction_id, id: event.event.id }
}

/// The fields an update changed, from its audit details (empty for other events).
pub fn changed_fields(event: &StreamEvent) -> Vec<String> {
    event
        .event
        .details
        .get("changed_fields")
        .and_then(|fields| fields.as_array())
        .map_or_else(Vec::new, |fields| fields.iter().filter_map(|field| field.as_str().map(str::to_owned)).collect())
}

/// The error that ends a stream, with the cursor to resume from.
pub(crate) fn ending(reason: Reason, cursor: Cursor) -> Error {
    Error::new(reason).with_metadata("resume_cursor", cursor.encode())
}
