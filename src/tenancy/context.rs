//! The explicit tenant context. There is no global or task-local "current tenant": code
//! below a handler receives this value as an argument.

use uuid::Uuid;

/// The tenant a data-plane request acts for, resolved and checked to be ACTIVE by the
/// tenant layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantContext {
    tenant_id: Uuid,
}

impl TenantContext {
    /// Only the resolver creates contexts, after checking the tenant is active.
    pub(crate) fn new(tenant_id: Uuid) -> Self {
        Self { tenant_id }
    }

    /// The tenant's id.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    /// Reads the context the tenant layer put into a request's extensions.
    pub fn from_request<T>(request: &tonic::Request<T>) -> crate::error::Result<Self> {
        request.extensions().get::<Self>().copied().ok_or_else(|| {
            crate::error::Error::Internal(anyhow::anyhow!("data-plane service called without the tenant layer"))
        })
    }
}
