//! `tenantd.v1.TenantService`: the control plane.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{required, time, timestamp, update_mask};
use crate::auth::api_key::ApiKeyToken;
use crate::domain::api_keys::{ApiKey, ApiKeys, NewKey};
use crate::domain::archives::{Archives, ImportOptions};
use crate::domain::moves::Moves;
use crate::domain::plans::parse_name as parse_plan_name;
use crate::domain::purge::{PurgeReceipt, Purges};
use crate::domain::quotas::QuotaUsage;
use crate::domain::tenants::{
    ChannelBinding, NewTenant, Tenant, TenantPatch, TenantRegistry, TenantState, UPDATABLE_FIELDS,
    parse_channel_binding, parse_channel_bindings, parse_domain, parse_domains,
};
use crate::domain::usage::UsageCounter;
use crate::domain::{Slug, page, parse_display_name, parse_etag, parse_id, parse_labels};
use crate::error::{Error, Reason, Result, Violations};
use crate::proto::api_key::Scope as ProtoScope;
use crate::proto::get_tenant_request::Selector;
use crate::proto::resolve_tenant_request::Identifier as ProtoIdentifier;
use crate::proto::tenant::{IsolationTier as ProtoTier, State};
use crate::proto::tenant_service_server::TenantService;
use crate::proto::{self};
use crate::tenancy::Transition;
use crate::tenancy::resolver::Identifier;
use crate::tenancy::selector::TenantSelector;
use crate::tenancy::{IsolationTier, Limits, RequestContext, Scope};

/// The control-plane adapter.
pub struct TenantApi {
    registry: TenantRegistry,
    keys: ApiKeys,
    usage: Arc<UsageCounter>,
    moves: Moves,
    archives: Archives,
    purges: Purges,
}

impl TenantApi {
    /// Serves `registry`, `keys`, `usage`, `moves`, `archives` and `purges`.
    pub fn new(
        registry: TenantRegistry,
        keys: ApiKeys,
        usage: Arc<UsageCounter>,
        moves: Moves,
        archives: Archives,
        purges: Purges,
    ) -> Self {
        Self { registry, keys, usage, moves, archives, purges }
    }

    async fn transition(
        &self,
        request: RequestContext,
        id: &str,
        etag: &str,
        transition: Transition,
    ) -> Result<proto::Tenant> {
        let id = parse_id("id", id)?;
        let expected_revision = parse_etag(etag)?;
        Ok(to_proto(self.registry.transition(request, id, expected_revision, transition).await?))
    }
}

fn to_proto(tenant: Tenant) -> proto::Tenant {
    proto::Tenant {
        id: tenant.id.to_string(),
        slug: tenant.slug,
        display_name: tenant.display_name,
        state: state_to_proto(tenant.state) as i32,
        isolation_tier: tier_to_proto(tenant.isolation_tier) as i32,
        labels: tenant.labels,
        create_time: Some(timestamp(tenant.create_time)),
        update_time: Some(timestamp(tenant.update_time)),
        delete_time: tenant.delete_time.map(timestamp),
        purge_time: tenant.purge_time.map(timestamp),
        etag: tenant.etag,
        plan: tenant.plan.unwrap_or_default(),
        // Unset when there are none, so a tenant without overrides reads as before they existed.
        limit_overrides: (tenant.limit_overrides != Limits::default())
            .then(|| super::plans::limits_to_proto(tenant.limit_overrides)),
        domains: tenant.domains,
        channel_bindings: tenant
            .channel_bindings
            .into_iter()
            .map(|binding| proto::ChannelBinding {
                channel_type: binding.channel_type,
                external_id: binding.external_id,
            })
            .collect(),
    }
}

fn receipt_to_proto(receipt: PurgeReceipt) -> proto::PurgeReceipt {
    let tier = IsolationTier::parse(&receipt.isolation_tier).map_or(ProtoTier::Unspecified, tier_to_proto);
    proto::PurgeReceipt {
        tenant_id: receipt.tenant_id.to_string(),
        operation: format!("operations/{}", receipt.operation_id),
        purged_by: receipt.purged_by,
        isolation_tier: tier as i32,
        start_time: Some(timestamp(receipt.start_time)),
        finish_time: Some(timestamp(receipt.finish_time)),
        removed_rows: receipt.removed_rows.into_iter().collect(),
        redis_keys_removed: receipt.redis_keys_removed,
        redis_status: receipt.redis_status,
        scanned_tables: receipt.scanned_tables,
        rows_found: receipt.rows_found,
    }
}

fn key_to_proto(key: ApiKey) -> proto::ApiKey {
    proto::ApiKey {
        id: key.id.to_string(),
        tenant_id: key.tenant_id.to_string(),
        display_name: key.display_name,
        scopes: key
            .scopes
            .into_iter()
            .map(|scope| match scope {
                Scope::Read => ProtoScope::Read as i32,
                Scope::Write => ProtoScope::Write as i32,
            })
            .collect(),
        create_time: Some(timestamp(key.create_time)),
        expire_time: key.expire_time.map(timestamp),
        revoke_time: key.revoke_time.map(timestamp),
        last_used_time: key.last_used_time.map(timestamp),
    }
}

fn state_to_proto(state: TenantState) -> State {
    match state {
        TenantState::Provisioning => State::Provisioning,
        TenantState::Active => State::Active,
        TenantState::Suspended => State::Suspended,
        TenantState::Deleted => State::Deleted,
        TenantState::Purging => State::Purging,
        TenantState::Purged => State::Purged,
    }
}

fn tier_to_proto(tier: IsolationTier) -> ProtoTier {
    match tier {
        IsolationTier::Pooled => ProtoTier::Pooled,
        IsolationTier::Schema => ProtoTier::Schema,
    }
}

/// The tier a CreateTenant asks for: unset is pooled.
fn tier_from_proto(value: i32) -> Result<IsolationTier> {
    match ProtoTier::try_from(value) {
        Ok(ProtoTier::Unspecified | ProtoTier::Pooled) => Ok(IsolationTier::Pooled),
        Ok(ProtoTier::Schema) => Ok(IsolationTier::Schema),
        Err(_) => Err(Error::invalid(
            Reason::IsolationTierInvalid,
            "tenant.isolation_tier",
            "is not a Tenant.IsolationTier value",
        )),
    }
}

fn state_filter(value: i32) -> Result<Option<TenantState>> {
    match State::try_from(value) {
        Ok(State::Unspecified) => Ok(None),
        Ok(State::Provisioning) => Ok(Some(TenantState::Provisioning)),
        Ok(State::Active) => Ok(Some(TenantState::Active)),
        Ok(State::Suspended) => Ok(Some(TenantState::Suspended)),
        Ok(State::Deleted) => Ok(Some(TenantState::Deleted)),
        Ok(State::Purging) => Ok(Some(TenantState::Purging)),
        Ok(State::Purged) => Ok(Some(TenantState::Purged)),
        Err(_) => Err(Error::invalid(Reason::StateInvalid, "state", "is not a Tenant.State value")),
    }
}

fn slug(field: &str, value: &str) -> Result<Slug> {
    Slug::parse(value).map_err(|description| Error::invalid(Reason::TenantSlugMalformed, field, description))
}

/// The message of a tenant's use of one quota.
pub(super) fn quota_usage_to_proto(usage: QuotaUsage) -> proto::QuotaUsage {
    proto::QuotaUsage { quota: usage.quota.as_str().to_owned(), used: usage.used, limit: usage.limit }
}

/// A tenant's plan field: empty is no plan.
fn plan_name(value: &str) -> Result<Option<String>> {
    if value.is_empty() { Ok(None) } else { parse_plan_name("tenant.plan", value).map(Some) }
}

fn bindings(bindings: Vec<proto::ChannelBinding>) -> Vec<ChannelBinding> {
    bindings
        .into_iter()
        .map(|binding| ChannelBinding { channel_type: binding.channel_type, external_id: binding.external_id })
        .collect()
}

fn scopes(values: &[i32]) -> Result<Vec<Scope>> {
    let mut scopes = Vec::new();
    for value in values {
        let scope = match ProtoScope::try_from(*value) {
            Ok(ProtoScope::Read) => Scope::Read,
            Ok(ProtoScope::Write) => Scope::Write,
            _ => return Err(Error::invalid(Reason::ScopesInvalid, "api_key.scopes", "must be READ or WRITE")),
        };
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, "api_key.scopes", "name at least one scope"));
    }
    Ok(scopes)
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    type ReadTenantArchiveStream = BoxStream<'static, Result<proto::TenantArchiveChunk, Status>>;

    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant = required("tenant", request.tenant)?;
        let mut checks = Violations::new();
        let slug = checks.check(slug("tenant.slug", &tenant.slug));
        let display_name = checks.check(parse_display_name("tenant.display_name", &tenant.display_name, true));
        let labels = checks.check(parse_labels("tenant.labels", tenant.labels));
        let domains = checks.check(parse_domains("tenant.domains", tenant.domains));
        let channel_bindings =
            checks.check(parse_channel_bindings("tenant.channel_bindings", bindings(tenant.channel_bindings)));
        let isolation_tier = checks.check(tier_from_proto(tenant.isolation_tier));
        let plan = checks.check(plan_name(&tenant.plan));
        let limit_overrides =
            checks.check(super::plans::limits_from_proto("tenant.limit_overrides", tenant.limit_overrides));
        let new = checks.finish(|| {
            Some(NewTenant {
                slug: slug?.as_str().to_owned(),
                display_name: display_name?,
                labels: labels?,
                domains: domains?,
                channel_bindings: channel_bindings?,
                isolation_tier: isolation_tier?,
                plan: plan?,
                limit_overrides: limit_overrides?,
            })
        })?;
        Ok(Response::new(to_proto(self.registry.create(context, new, &request.request_id).await?)))
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
        let context = RequestContext::from_request(&request)?;
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
        if mask.contains("domains") {
            patch.domains = Some(parse_domains("tenant.domains", tenant.domains)?);
        }
        if mask.contains("channel_bindings") {
            patch.channel_bindings =
                Some(parse_channel_bindings("tenant.channel_bindings", bindings(tenant.channel_bindings))?);
        }
        if mask.contains("plan") {
            patch.plan = Some(plan_name(&tenant.plan)?);
        }
        if mask.contains("limit_overrides") {
            patch.limit_overrides =
                Some(super::plans::limits_from_proto("tenant.limit_overrides", tenant.limit_overrides)?);
        }
        Ok(Response::new(to_proto(self.registry.update(context, id, expected_revision, patch).await?)))
    }

    async fn suspend_tenant(
        &self,
        request: Request<proto::SuspendTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        Ok(Response::new(self.transition(context, &request.id, &request.etag, Transition::Suspend).await?))
    }

    async fn resume_tenant(
        &self,
        request: Request<proto::ResumeTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        Ok(Response::new(self.transition(context, &request.id, &request.etag, Transition::Resume).await?))
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        Ok(Response::new(self.transition(context, &request.id, &request.etag, Transition::Delete).await?))
    }

    async fn move_tenant(
        &self,
        request: Request<proto::MoveTenantRequest>,
    ) -> Result<Response<crate::proto::longrunning::Operation>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let mut violations = Violations::new();
        let id = violations.check(parse_id("id", &request.id));
        let tier = violations.check(match ProtoTier::try_from(request.isolation_tier) {
            Ok(ProtoTier::Unspecified) => {
                Err(Error::invalid(Reason::FieldRequired, "isolation_tier", "is required: POOLED or SCHEMA"))
            }
            Ok(ProtoTier::Pooled) => Ok(IsolationTier::Pooled),
            Ok(ProtoTier::Schema) => Ok(IsolationTier::Schema),
            Err(_) => Err(Error::invalid(
                Reason::IsolationTierInvalid,
                "isolation_tier",
                "is not a Tenant.IsolationTier value",
            )),
        });
        let (id, tier) = violations.finish(|| Some((id?, tier?)))?;
        let operation = self.moves.start(&context, id, tier).await?;
        Ok(Response::new(super::operations::to_proto(operation)))
    }

    async fn resolve_tenant(
        &self,
        request: Request<proto::ResolveTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let identifier = required("identifier", request.into_inner().identifier)?;
        let tenant = match identifier {
            ProtoIdentifier::Id(id) => self.registry.resolve_id(parse_id("id", &id)?).await?,
            ProtoIdentifier::Slug(value) => {
                self.registry.resolve(&Identifier::Slug(slug("slug", &value)?.as_str().to_owned())).await?
            }
            ProtoIdentifier::Domain(domain) => {
                self.registry.resolve(&Identifier::Domain(parse_domain("domain", &domain)?)).await?
            }
            ProtoIdentifier::ChannelBinding(binding) => {
                let binding = ChannelBinding { channel_type: binding.channel_type, external_id: binding.external_id };
                parse_channel_binding("channel_binding", &binding)?;
                let identifier =
                    Identifier::Channel { channel_type: binding.channel_type, external_id: binding.external_id };
                self.registry.resolve(&identifier).await?
            }
            ProtoIdentifier::ApiKey(text) => {
                let token = ApiKeyToken::parse(&text)
                    .map_err(|_| Error::invalid(Reason::FieldMalformed, "api_key", "is not a tenantd API key"))?;
                // An invalid key names no tenant: NOT_FOUND, like any unknown identifier. The
                // key is checked first, so an outage while checking it is UNAVAILABLE.
                if !self.keys.is_valid(&token).await? {
                    return Err(Error::new(Reason::TenantNotFound).into());
                }
                self.registry.resolve_id(token.tenant_id()).await?
            }
        };
        Ok(Response::new(to_proto(tenant)))
    }

    async fn create_api_key(
        &self,
        request: Request<proto::CreateApiKeyRequest>,
    ) -> Result<Response<proto::CreateApiKeyResponse>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant_id = parse_id("tenant_id", &request.tenant_id)?;
        let key = required("api_key", request.api_key)?;
        let expire_time = key.expire_time.map(|value| time("api_key.expire_time", value)).transpose()?;
        if expire_time.is_some_and(|expiry| expiry <= chrono::Utc::now()) {
            return Err(
                Error::invalid(Reason::ExpireTimeInvalid, "api_key.expire_time", "must be in the future").into()
            );
        }
        let new = NewKey {
            display_name: parse_display_name("api_key.display_name", &key.display_name, true)?,
            scopes: scopes(&key.scopes)?,
            expire_time,
        };
        let created = self.keys.create(context, tenant_id, new, &request.request_id).await?;
        Ok(Response::new(proto::CreateApiKeyResponse {
            api_key: Some(key_to_proto(created.key)),
            secret: created.secret.unwrap_or_default(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<proto::ListApiKeysRequest>,
    ) -> Result<Response<proto::ListApiKeysResponse>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant_id = parse_id("tenant_id", &request.tenant_id)?;
        let page_size = page::page_size(request.page_size)?;
        let page = self.keys.list(context, tenant_id, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: page.keys.into_iter().map(key_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<proto::RevokeApiKeyRequest>,
    ) -> Result<Response<proto::ApiKey>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant_id = parse_id("tenant_id", &request.tenant_id)?;
        let key_id = parse_id("id", &request.id)?;
        Ok(Response::new(key_to_proto(self.keys.revoke(context, tenant_id, key_id).await?)))
    }

    async fn list_tenant_audit_events(
        &self,
        request: Request<proto::ListTenantAuditEventsRequest>,
    ) -> Result<Response<proto::ListTenantAuditEventsResponse>, Status> {
        let context = RequestContext::from_request(&request)?;
        let request = request.into_inner();
        let tenant_id = parse_id("tenant_id", &request.tenant_id)?;
        let page_size = page::page_size(request.page_size)?;
        let filter = super::audit::filter(request.filter)?;
        let page = self.registry.audit_events(context, tenant_id, filter, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListTenantAuditEventsResponse {
            audit_events: page.events.into_iter().map(super::audit::to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_tenant_usage(
        &self,
        request: Request<proto::GetTenantUsageRequest>,
    ) -> Result<Response<proto::TenantUsage>, Status> {
        let context = RequestContext::from_request(&request)?;
        let tenant_id = parse_id("tenant_id", &request.into_inner().tenant_id)?;
        self.registry.get(&TenantSelector::Id(tenant_id)).await?;
        let usage = self.usage.usage(tenant_id).await?;
        let quotas = self.registry.quota_usage(context, tenant_id).await?;
        Ok(Response::new(proto::TenantUsage {
            tenant_id: tenant_id.to_string(),
            request_count: i64::try_from(usage.request_count).unwrap_or(i64::MAX),
            last_active_time: usage.last_active_time.map(timestamp),
            quotas: quotas.into_iter().map(quota_usage_to_proto).collect(),
        }))
    }

    async fn export_tenant(
        &self,
        request: Request<proto::ExportTenantRequest>,
    ) -> Result<Response<crate::proto::longrunning::Operation>, Status> {
        let context = RequestContext::from_request(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let operation = self.archives.export(&context, id).await?;
        Ok(Response::new(super::operations::to_proto(operation)))
    }

    async fn read_tenant_archive(
        &self,
        request: Request<proto::ReadTenantArchiveRequest>,
    ) -> Result<Response<Self::ReadTenantArchiveStream>, Status> {
        let id = super::operations::operation_id(&request.into_inner().name)?;
        let archive = self.archives.open(id).await?;
        let archives = self.archives.clone();
        // Pulled: the next chunk is read only when the transport takes the last one.
        let chunks = futures_util::stream::try_unfold((0, 0i64), move |(sequence, offset)| {
            let archives = archives.clone();
            async move {
                let Some(data) = archives.chunk(&archive, sequence).await? else { return Ok(None) };
                let length = data.len() as i64;
                let chunk = proto::TenantArchiveChunk { data, offset, total_bytes: archive.total_bytes };
                Ok::<_, Error>(Some((chunk, (sequence + 1, offset + length))))
            }
        });
        Ok(Response::new(chunks.map_err(Status::from).boxed()))
    }

    async fn import_tenant(
        &self,
        request: Request<Streaming<proto::ImportTenantRequest>>,
    ) -> Result<Response<crate::proto::longrunning::Operation>, Status> {
        let context = RequestContext::from_request(&request)?;
        let mut stream = request.into_inner();
        let first = stream.message().await?.and_then(|message| message.part);
        let Some(proto::import_tenant_request::Part::Options(options)) = first else {
            return Err(
                Error::invalid(Reason::FieldRequired, "options", "the first message must carry the options").into()
            );
        };
        let options = import_options(options)?;
        let upload = stream.map(|message| match message {
            Ok(proto::ImportTenantRequest { part: Some(proto::import_tenant_request::Part::Chunk(bytes)) }) => {
                Ok(bytes)
            }
            Ok(_) => {
                Err(Error::invalid(Reason::FieldMalformed, "chunk", "every message after the first must carry a chunk"))
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => Err(Error::new(Reason::UploadStalled)),
            Err(_) => Err(Error::invalid(Reason::ArchiveInvalid, "chunk", "the upload ended with a transport error")),
        });
        let operation = self.archives.import(&context, options, upload).await?;
        Ok(Response::new(super::operations::to_proto(operation)))
    }

    async fn purge_tenant(
        &self,
        request: Request<proto::PurgeTenantRequest>,
    ) -> Result<Response<crate::proto::longrunning::Operation>, Status> {
        let context = RequestContext::from_request(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        let operation = self.purges.start(&context, id).await?;
        Ok(Response::new(super::operations::to_proto(operation)))
    }

    async fn get_purge_receipt(
        &self,
        request: Request<proto::GetPurgeReceiptRequest>,
    ) -> Result<Response<proto::PurgeReceipt>, Status> {
        let tenant_id = parse_id("tenant_id", &request.into_inner().tenant_id)?;
        Ok(Response::new(receipt_to_proto(self.purges.receipt(tenant_id).await?)))
    }
}

fn import_options(options: proto::ImportTenantOptions) -> Result<ImportOptions> {
    let mut violations = Violations::new();
    let tenant_id = (!options.tenant_id.is_empty())
        .then(|| violations.check(parse_id("options.tenant_id", &options.tenant_id)))
        .flatten();
    let slug = (!options.slug.is_empty()).then(|| violations.check(slug("options.slug", &options.slug))).flatten();
    let isolation_tier = violations.check(match ProtoTier::try_from(options.isolation_tier) {
        Ok(ProtoTier::Unspecified) => Ok(None),
        Ok(ProtoTier::Pooled) => Ok(Some(IsolationTier::Pooled)),
        Ok(ProtoTier::Schema) => Ok(Some(IsolationTier::Schema)),
        Err(_) => Err(Error::invalid(
            Reason::IsolationTierInvalid,
            "options.isolation_tier",
            "is not a Tenant.IsolationTier value",
        )),
    });
    let request_id =
        violations.check(crate::domain::idempotency::parse_request_id("options.request_id", &options.request_id));
    violations
        .finish(|| Some(ImportOptions { tenant_id, slug, isolation_tier: isolation_tier?, request_id: request_id? }))
}
