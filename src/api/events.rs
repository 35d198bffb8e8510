//! `tenantd.v1.EventService`: the WatchEvents stream (decision 0015). The gateway admitted
//! either the platform (a [`RequestContext`]: the request names the tenants) or a tenant
//! API key (a [`TenantContext`]: its own tenant, and nothing else).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tonic::{Request, Response, Status};

use super::{json_to_struct, time, timestamp};
use crate::domain::events::watch::{self};
use crate::domain::events::{
    Cursor, EventBatch, EventFilter, EventHub, Start, TenantSet, WatchRequest, changed_fields, position_of,
};
use crate::domain::parse_id;
use crate::error::{Error, Reason, Result, Violations};
use crate::proto::event_service_server::EventService;
use crate::proto::watch_events_request::Start as ProtoStart;
use crate::proto::{self};
use crate::tenancy::{Readmission, RequestContext, TenantContext};

/// The adapter of the event stream.
pub struct EventApi {
    hub: Arc<EventHub>,
}

impl EventApi {
    /// Serves the streams of `hub`.
    pub fn new(hub: Arc<EventHub>) -> Self {
        Self { hub }
    }
}

/// The validated request; `key_tenant` is the API key's tenant, `None` for the platform.
fn watch_request(request: proto::WatchEventsRequest, key_tenant: Option<uuid::Uuid>) -> Result<WatchRequest> {
    let mut violations = Violations::new();
    let mut named = BTreeSet::new();
    for (index, id) in request.tenant_ids.iter().enumerate() {
        if let Some(id) = violations.check(parse_id(&format!("tenant_ids[{index}]"), id)) {
            named.insert(id);
        }
    }
    let filter = violations.check(EventFilter::parse(request.event_types, request.resource_types));
    let start = violations.check(match request.start {
        None => Ok(Start::Now),
        Some(ProtoStart::Cursor(cursor)) => Cursor::decode("cursor", &cursor).map(Start::After),
        Some(ProtoStart::StartTime(start_time)) => time("start_time", start_time).map(Start::Since),
    });
    let tenants = match key_tenant {
        // A key watches its own tenant; naming any other is refused, not ignored.
        Some(own) if named.iter().any(|id| *id != own) => return Err(Error::new(Reason::TenantMismatch)),
        Some(own) => TenantSet::Only(BTreeSet::from([own])),
        None if named.is_empty() => TenantSet::All,
        None => TenantSet::Only(named),
    };
    violations.finish(|| Some(WatchRequest { tenants, filter: filter?, start: start? }))
}

/// When the call's `grpc-timeout` (`<digits><H|M|S|m|u|n>`) ends it; a malformed or
/// absent one sets no deadline (the transport already checked its form).
fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    tokio::time::Instant::now().checked_add(timeout)
}

/// The proto form of a message of the stream.
fn to_proto(batch: EventBatch) -> proto::WatchEventsResponse {
    let events = batch
        .events
        .into_iter()
        .map(|stored| {
            let cursor = Cursor { position: position_of(&stored), time: stored.event.create_time };
            let changed_fields = changed_fields(&stored);
            let event = stored.event;
            proto::TenantEvent {
                id: event.id.to_string(),
                cursor: cursor.encode(),
                tenant_id: event.tenant_id.to_string(),
                event_type: event.action,
                resource_type: event.resource_type,
                resource_id: event.resource_id,
                changed_fields,
                details: Some(json_to_struct(event.details)),
                event_time: Some(timestamp(event.create_time)),
                actor_type: event.actor_type,
                actor_id: event.actor_id,
            }
        })
        .collect();
    proto::WatchEventsResponse { events, cursor: batch.cursor.encode() }
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchEventsStream = BoxStream<'static, Result<proto::WatchEventsResponse, Status>>;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let key_tenant = match TenantContext::from_request(&request) {
            Ok(context) => Some(context.tenant_id()),
            // Not a key: the gateway must have admitted the platform.
            Err(_) => RequestContext::from_request(&request).map(|_| None)?,
        };
        let deadline = deadline(request.metadata());
        let readmission = Readmission::from_request(&request);
        let watch = watch_request(request.into_inner(), key_tenant)?;
        let stream = watch::open(&self.hub, watch, deadline, readmission).await?;
        Ok(Response::new(stream.map(|message| message.map(to_proto).map_err(Status::from)).boxed()))
    }
}
