//! `tenantd.v1.TenantService`: the control plane.

use tonic::{Request, Response, Status};

use super::{required, timestamp, update_mask};
use crate::domain::tenants::{
    NewTenant, Tenant, TenantPatch, TenantRegistry, TenantState, Transition, UPDATABLE_FIELDS,
};
use crate::domain::{Slug, page, parse_display_name, parse_etag, parse_id, parse_labels};
use crate::error::{Error, Result};
use crate::proto::get_tenant_request::Selector;
use crate::proto::tenant::State;
use crate::proto::tenant_service_server::TenantService;
use crate::proto::{self};
use crate::tenancy::selector::TenantSelector;

/// The control-plane adapter.
pub struct TenantApi {
    registry: TenantRegistry,
}

impl TenantApi {
    /// Serves `registry`.
    pub fn new(registry: TenantRegistry) -> Self {
        Self { registry }
    }

    async fn transition(&self, id: &str, etag: &str, transition: Transition) -> Result<proto::Tenant> {
        let id = parse_id("id", id)?;
        let expected_revision = parse_etag(etag)?;
        Ok(to_proto(self.registry.transition(id, expected_revision, transition).await?))
    }
}

fn to_proto(tenant: Tenant) -> proto::Tenant {
    proto::Tenant {
        id: tenant.id.to_string(),
        slug: tenant.slug,
        display_name: tenant.display_name,
        state: state_to_proto(tenant.state) as i32,
        labels: tenant.labels.into_iter().collect(),
        create_time: Some(timestamp(tenant.create_time)),
        update_time: Some(timestamp(tenant.update_time)),
        delete_time: tenant.delete_time.map(timestamp),
        etag: tenant.etag,
    }
}

fn state_to_proto(state: TenantState) -> State {
    match state {
        TenantState::Active => State::Active,
        TenantState::Suspended => State::Suspended,
        TenantState::Deleted => State::Deleted,
    }
}

fn state_filter(value: i32) -> Result<Option<TenantState>> {
    match State::try_from(value) {
        Ok(State::Unspecified) => Ok(None),
        Ok(State::Active) => Ok(Some(TenantState::Active)),
        Ok(State::Suspended) => Ok(Some(TenantState::Suspended)),
        Ok(State::Deleted) => Ok(Some(TenantState::Deleted)),
        Err(_) => Err(Error::invalid("STATE_INVALID", "state", "is not a Tenant.State value")),
    }
}

fn slug(field: &str, value: &str) -> Result<Slug> {
    Slug::parse(value).map_err(|description| Error::invalid("TENANT_SLUG_MALFORMED", field, description))
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let tenant = required("tenant", request.into_inner().tenant)?;
        let new = NewTenant {
            slug: slug("tenant.slug", &tenant.slug)?,
            display_name: parse_display_name("tenant.display_name", &tenant.display_name, true)?,
            labels: parse_labels("tenant.labels", tenant.labels)?,
        };
        Ok(Response::new(to_proto(self.registry.create(new).await?)))
    }

    async fn get_tenant(&self, request: Request<proto::GetTenantRequest>) -> Result<Response<proto::Tenant>, Status> {
        let selector = match required("selector", request.into_inner().selector)? {
            Selector::Id(id) => TenantSelector::Id(parse_id("id", &id)?),
            Selector::Slug(value) => TenantSelector::Slug(slug("slug", &value)?),
        };
        Ok(Response::new(to_proto(self.registry.get(&selector).await?)))
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let state = state_filter(request.state)?;
        let page = self.registry.list(state, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListTenantsResponse {
            tenants: page.tenants.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<proto::UpdateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let request = request.into_inner();
        let mask = update_mask(request.update_mask, UPDATABLE_FIELDS)?;
        let tenant = required("tenant", request.tenant)?;
        let id = parse_id("tenant.id", &tenant.id)?;
        let expected_revision = parse_etag(&tenant.etag)?;
        let mut patch = TenantPatch::default();
        if mask.contains("display_name") {
            patch.display_name = Some(parse_display_name("tenant.display_name", &tenant.display_name, true)?);
        }
        if mask.contains("labels") {
            patch.labels = Some(parse_labels("tenant.labels", tenant.labels)?);
        }
        Ok(Response::new(to_proto(self.registry.update(id, expected_revision, patch).await?)))
    }

    async fn suspend_tenant(
        &self,
        request: Request<proto::SuspendTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.transition(&request.id, &request.etag, Transition::Suspend).await?))
    }

    async fn resume_tenant(
        &self,
        request: Request<proto::ResumeTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.transition(&request.id, &request.etag, Transition::Resume).await?))
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let request = request.into_inner();
        Ok(Response::new(self.transition(&request.id, &request.etag, Transition::Delete).await?))
    }
}
