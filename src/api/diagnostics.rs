//! `tenantd.v1.DiagnosticsService` (data plane): the smallest path through the tenant layer.

use tonic::{Request, Response, Status};

use crate::proto::diagnostics_service_server::DiagnosticsService;
use crate::proto::{PingRequest, PingResponse};
use crate::tenancy::TenantContext;

/// The data-plane diagnostics adapter.
pub struct DiagnosticsApi;

#[tonic::async_trait]
impl DiagnosticsService for DiagnosticsApi {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let context = TenantContext::from_request(&request)?;
        Ok(Response::new(PingResponse { tenant_id: context.tenant_id().to_string() }))
    }
}
