//! `tenantd.v1.AuditService` (data plane), and the conversions the control plane's
//! ListTenantAuditEvents shares.

use tonic::{Request, Response, Status};

use super::{json_to_struct, time, timestamp};
use crate::domain::audit::{self, AuditEvent, AuditFilter};
use crate::domain::page;
use crate::error::Result;
use crate::proto::audit_service_server::AuditService;
use crate::proto::{self};
use crate::tenancy::{TenantContext, TenantDb};

/// The data-plane adapter for audit events.
pub struct AuditApi {
    database: TenantDb,
}

impl AuditApi {
    /// Serves the audit trail stored in `database`.
    pub fn new(database: TenantDb) -> Self {
        Self { database }
    }
}

/// The proto form of an event.
pub(super) fn to_proto(event: AuditEvent) -> proto::AuditEvent {
    proto::AuditEvent {
        id: event.id.to_string(),
        tenant_id: event.tenant_id.to_string(),
        create_time: Some(timestamp(event.create_time)),
        actor_type: event.actor_type,
        actor_id: event.actor_id,
        action: event.action,
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        request_id: event.request_id,
        details: Some(json_to_struct(event.details)),
    }
}

/// The validated filter of a listing.
pub(super) fn filter(filter: Option<proto::AuditEventFilter>) -> Result<AuditFilter> {
    let filter = filter.unwrap_or_default();
    let non_empty = |value: String| (!value.is_empty()).then_some(value);
    Ok(AuditFilter {
        resource_type: non_empty(filter.resource_type),
        resource_id: non_empty(filter.resource_id),
        start_time: filter.start_time.map(|value| time("filter.start_time", value)).transpose()?,
        end_time: filter.end_time.map(|value| time("filter.end_time", value)).transpose()?,
    })
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let filter = filter(request.filter)?;
        let page = audit::list(&self.database, &context, filter, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListAuditEventsResponse {
            audit_events: page.events.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
