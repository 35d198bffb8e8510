//! `tenantd.v1.QuotaService` (data plane): a tenant's own use of its quotas.

use tonic::{Request, Response, Status};

use super::tenants::quota_usage_to_proto;
use crate::domain::quotas;
use crate::proto::quota_service_server::QuotaService;
use crate::proto::{GetQuotaUsageRequest, GetQuotaUsageResponse};
use crate::tenancy::{TenantContext, TenantDb};

/// The data-plane adapter for quota usage.
pub struct QuotaApi {
    database: TenantDb,
}

impl QuotaApi {
    /// Reads usage through `database`.
    pub fn new(database: TenantDb) -> Self {
        Self { database }
    }
}

#[tonic::async_trait]
impl QuotaService for QuotaApi {
    async fn get_quota_usage(
        &self,
        request: Request<GetQuotaUsageRequest>,
    ) -> Result<Response<GetQuotaUsageResponse>, Status> {
        let context = TenantContext::from_request(&request)?;
        let usage = quotas::usage(&self.database, &context).await?;
        Ok(Response::new(GetQuotaUsageResponse {
            plan: context.plan().unwrap_or_default().to_owned(),
            quotas: usage.into_iter().map(quota_usage_to_proto).collect(),
        }))
    }
}
