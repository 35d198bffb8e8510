//! The tenant registry: the control plane's operations on tenants and their identifiers.
//!
//! Every mutation runs in a transaction for the tenant it concerns (so its audit event,
//! written under RLS, commits with it), and afterwards invalidates the resolution caches.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::rows::{assemble, changes_of, labels_json, load, lock, write_identifiers};
use super::idempotency::{self, RequestKey};
use super::page::{self, PageToken, fingerprint};
use super::quotas::{self, QuotaUsage};
use super::{Slug, audit};
use crate::db::tenant_schema::Provisioner;
use crate::db::tenant_tx::{AsyncWork, TenantTx};
use crate::db::tenants::{NewTenantRow, TenantRow};
use crate::db::{self};
use crate::error::{self, Error, Reason, Result};
use crate::tenancy::resolver::{Identifier, TenantResolver};
use crate::tenancy::selector::TenantSelector;
use crate::tenancy::{IsolationTier, Limits, RequestContext, TenantContext, TenantDb, Transition};

pub use self::validate::{MAX_IDENTIFIERS, parse_channel_binding, parse_channel_bindings, parse_domain, parse_domains};
pub use crate::tenancy::TenantState;

mod rows;
mod validate;

/// An external channel identity, such as a Slack workspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelBinding {
    /// E.g. `slack`.
    pub channel_type: String,
    /// The tenant's id in that channel.
    pub external_id: String,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id.
    pub id: Uuid,
    /// Slug (empty once purged: released).
    pub slug: String,
    /// Display name (empty once purged).
    pub display_name: String,
    /// State.
    pub state: TenantState,
    /// Where its data lives (pooled in replays recorded before tiers existed).
    #[serde(default)]
    pub isolation_tier: IsolationTier,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Domains, sorted.
    pub domains: Vec<String>,
    /// Channel bindings, sorted.
    pub channel_bindings: Vec<ChannelBinding>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Deletion time.
    pub delete_time: Option<DateTime<Utc>>,
    /// Purge time (absent in replays recorded before purges existed).
    #[serde(default)]
    pub purge_time: Option<DateTime<Utc>>,
    /// Etag.
    pub etag: String,
    /// The plan's name; `None`: no plan (unlimited).
    pub plan: Option<String>,
    /// Overrides of the plan's limits.
    pub limit_overrides: Limits,
}

/// A validated tenant to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewTenant {
    /// Slug.
    pub slug: String,
    /// Display name.
    pub display_name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Domains.
    pub domains: Vec<String>,
    /// Channel bindings.
    pub channel_bindings: Vec<ChannelBinding>,
    /// Plan (`None`: none, unlimited).
    pub plan: Option<String>,
    /// Overrides of the plan's limits.
    pub limit_overrides: Limits,
    /// Where its data lives. Left out of the idempotency fingerprint when pooled, so that a
    /// pooled create fingerprints as it did before tiers existed.
    #[serde(skip_serializing_if = "is_pooled")]
    pub isolation_tier: IsolationTier,
}

fn is_pooled(tier: &IsolationTier) -> bool {
    *tier == IsolationTier::Pooled
}

/// New values for the fields an update names; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New labels (replacing all labels).
    pub labels: Option<BTreeMap<String, String>>,
    /// New domains (replacing all).
    pub domains: Option<Vec<String>>,
    /// New channel bindings (replacing all).
    pub channel_bindings: Option<Vec<ChannelBinding>>,
    /// New plan (`Some(None)`: no plan).
    pub plan: Option<Option<String>>,
    /// New overrides of the plan's limits (replacing all).
    pub limit_overrides: Option<Limits>,
}

/// Fields `UpdateTenant` may change.
pub const UPDATABLE_FIELDS: &[&str] =
    &["display_name", "labels", "domains", "channel_bindings", "plan", "limit_overrides"];

/// One page of tenants.
#[derive(Debug, Clone)]
pub struct TenantPage {
    /// The tenants.
    pub tenants: Vec<Tenant>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// The control plane's operations on tenants.
#[derive(Clone)]
pub struct TenantRegistry {
    database: TenantDb,
    resolver: Arc<TenantResolver>,
    provisioner: Provisioner,
}

impl TenantRegistry {
    /// A registry over `database`; changes invalidate `resolver`'s caches; schema tenants'
    /// schemas are created through `provisioner`.
    pub fn new(database: TenantDb, resolver: Arc<TenantResolver>, provisioner: Provisioner) -> Self {
        Self { database, resolver, provisioner }
    }

    /// Creates a tenant, exactly once per `request_id`: a pooled tenant ACTIVE at once; a
    /// schema tenant PROVISIONING, then ACTIVE once its schema is complete. If provisioning
    /// fails (UNAVAILABLE, `TENANT_PROVISIONING`), the tenant stays PROVISIONING, is not
    /// served, and a retry with the same `request_id` finishes it.
    pub async fn create(&self, request: RequestContext, new: NewTenant, request_id: &str) -> Result<Tenant> {
        Slug::parse(&new.slug)
            .map_err(|description| Error::invalid(Reason::TenantSlugMalformed, "tenant.slug", description))?;
        let tier = new.isolation_tier;
        if tier == IsolationTier::Schema && !self.provisioner.is_configured() {
            return Err(Error::new(Reason::SchemaTierUnavailable));
        }
        let initial = match tier {
            IsolationTier::Pooled => TenantState::Active,
            IsolationTier::Schema => TenantState::Provisioning,
        };
        let key = RequestKey::new(idempotency::Scope::Platform, "CreateTenant", request_id, &new)?;
        let context = TenantContext::new(Uuid::now_v7(), request.clone());
        let (tenant, replayed) = self
            .database
            .run(&context, async move |transaction| {
                if let Some(replay) = idempotency::begin::<Tenant>(transaction, &key).await? {
                    return Ok((replay, true));
                }
                let id = transaction.tenant_id();
                let labels = labels_json(&new.labels)?;
                let row = db::tenants::insert(
                    transaction.connection(),
                    NewTenantRow {
                        id,
                        slug: &new.slug,
                        display_name: &new.display_name,
                        state: initial.as_str(),
                        labels,
                        isolation_tier: tier.as_str(),
                        plan: new.plan.as_deref(),
                        limit_overrides: new.limit_overrides.to_json(),
                    },
                )
                .await
                .map_err(map_database_error)?;
                write_identifiers(transaction, Some(&new.domains), Some(&new.channel_bindings)).await?;
                let details =
                    serde_json::json!({ "slug": new.slug, "isolation_tier": tier.as_str(), "plan": new.plan });
                audit::record(transaction, "tenant.create", "tenant", id, details).await?;
                let tenant = load(transaction, row).await?;
                idempotency::finish(transaction, &key, &tenant).await?;
                Ok((tenant, false))
            })
            .await?;
        if replayed {
            tracing::info!(tenant.id = %tenant.id, idempotency.request_id = %request_id, "tenant create replayed");
        } else {
            tracing::info!(tenant.id = %tenant.id, tenant.slug = %tenant.slug, tier = tier.as_str(), "tenant created");
        }
        if tenant.isolation_tier == IsolationTier::Schema && tenant.state == TenantState::Provisioning {
            return self.finish_provisioning(request, tenant.id).await;
        }
        Ok(tenant)
    }

    /// Creates a PROVISIONING schema tenant's schema (if a previous attempt did not) and makes
    /// the tenant ACTIVE; safe to repeat. A tenant that is no longer PROVISIONING is returned
    /// as it is.
    pub async fn finish_provisioning(&self, request: RequestContext, tenant_id: Uuid) -> Result<Tenant> {
        let current = self.get(&TenantSelector::Id(tenant_id)).await?;
        if current.state != TenantState::Provisioning {
            return Ok(current);
        }
        let provisioned = self.provisioner.provision(tenant_id).await?;
        let context = TenantContext::new(tenant_id, request);
        let from = TenantState::Provisioning.as_str();
        let to = TenantState::Active.as_str();
        let tenant = self
            .database
            .run(&context, async move |transaction| {
                let Some(row) = db::tenants::transition(transaction.connection(), tenant_id, from, to).await? else {
                    let row = db::tenants::find_by_id(transaction.connection(), tenant_id)
                        .await?
                        .ok_or_else(tenant_not_found)?;
                    return load(transaction, row).await;
                };
                let details =
                    serde_json::json!({ "from": from, "to": to, "schema": db::tenant_schema::schema_name(tenant_id) });
                audit::record(transaction, "tenant.provision", "tenant", tenant_id, details).await?;
                load(transaction, row).await
            })
            .await?;
        self.resolver.invalidate(tenant_id, None).await;
        tracing::info!(tenant.id = %tenant_id, outcome = ?provisioned, "tenant schema provisioned");
        Ok(tenant)
    }

    /// Gets a tenant in any state.
    pub async fn get(&self, selector: &TenantSelector) -> Result<Tenant> {
        db::retry::read(|| {
            let selector = selector.clone();
            self.database.global(async move |connection| {
                let row = match &selector {
                    TenantSelector::Id(id) => db::tenants::find_by_id(connection, *id).await?,
                    TenantSelector::Slug(slug) => db::tenants::find_by_slug(connection, slug.as_str()).await?,
                };
                let row = row.ok_or_else(tenant_not_found)?;
                let mut tenants = assemble(connection, vec![row]).await?;
                tenants.pop().ok_or_else(tenant_not_found)
            })
        })
        .await
    }

    /// Lists tenants in creation order.
    pub async fn list(&self, state: Option<TenantState>, page_size: i64, page_token: &str) -> Result<TenantPage> {
        let filter = fingerprint(&format!("state={}", state.map_or("", TenantState::as_str)));
        let after = PageToken::decode(page_token, Uuid::nil(), filter)?;
        db::retry::read(|| {
            self.database.global(async move |connection| {
                let state = state.map(TenantState::as_str);
                let mut rows = db::tenants::list(connection, state, after, page_size + 1).await?;
                let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, Uuid::nil(), filter);
                let tenants = assemble(connection, rows).await?;
                Ok(TenantPage { tenants, next_page_token })
            })
        })
        .await
    }

    /// Resolves an identifier to a tenant that is not deleted (edge gateways).
    pub async fn resolve(&self, identifier: &Identifier) -> Result<Tenant> {
        let tenant_id = self.resolver.identify(identifier).await?.ok_or_else(tenant_not_found)?;
        self.resolve_id(tenant_id).await
    }

    /// Returns a tenant by id unless it is deleted.
    pub async fn resolve_id(&self, tenant_id: Uuid) -> Result<Tenant> {
        match self.resolver.state(tenant_id).await? {
            None | Some(TenantState::Deleted) => Err(tenant_not_found()),
            Some(_) => self.get(&TenantSelector::Id(tenant_id)).await,
        }
    }

    /// Applies an update to a tenant that is not deleted.
    pub async fn update(
        &self,
        request: RequestContext,
        id: Uuid,
        expected_revision: Option<i64>,
        patch: TenantPatch,
    ) -> Result<Tenant> {
        let mut changed = Vec::new();
        if patch.display_name.is_some() {
            changed.push("display_name");
        }
        if patch.labels.is_some() {
            changed.push("labels");
        }
        if patch.domains.is_some() {
            changed.push("domains");
        }
        if patch.channel_bindings.is_some() {
            changed.push("channel_bindings");
        }
        if patch.plan.is_some() {
            changed.push("plan");
        }
        if patch.limit_overrides.is_some() {
            changed.push("limit_overrides");
        }
        self.change(request, id, expected_revision, async move |(transaction, row)| {
            match TenantState::parse(&row.state) {
                Some(TenantState::Deleted) => return Err(tenant_deleted()),
                Some(TenantState::Purging) => return Err(Error::new(Reason::TenantPurging)),
                Some(TenantState::Purged) => return Err(Error::new(Reason::TenantPurged)),
                _ => {}
            }
            let mut changes = changes_of(&row);
            if let Some(display_name) = patch.display_name {
                changes.display_name = Some(display_name);
            }
            if let Some(labels) = &patch.labels {
                changes.labels = labels_json(labels)?;
            }
            let mut details = audit::changed_fields(&changed);
            if let Some(plan) = patch.plan {
                // A change of plan says from what to what: `plan.changed` is this event.
                details["plan"] = serde_json::json!({ "from": changes.plan, "to": plan });
                changes.plan = plan;
            }
            if let Some(overrides) = &patch.limit_overrides {
                changes.limit_overrides = overrides.to_json();
            }
            let row = db::tenants::save(transaction.connection(), row.id, changes).await.map_err(map_database_error)?;
            write_identifiers(transaction, patch.domains.as_deref(), patch.channel_bindings.as_deref()).await?;
            audit::record(transaction, "tenant.update", "tenant", row.id, details).await?;
            load(transaction, row).await
        })
        .await
    }

    /// Applies a lifecycle transition by the table in [`crate::tenancy::TenantState::after`].
    /// Repeating a transition is a no-op (and is not audited).
    pub async fn transition(
        &self,
        request: RequestContext,
        id: Uuid,
        expected_revision: Option<i64>,
        transition: Transition,
    ) -> Result<Tenant> {
        let tenant = self
            .change(request, id, expected_revision, async move |(transaction, row)| {
                let current = TenantState::parse(&row.state)
                    .ok_or_else(|| Error::internal(anyhow::anyhow!("tenant has unknown state")))?;
                let target = current.after(transition).map_err(Error::new)?;
                if target == current {
                    return load(transaction, row).await;
                }
                let mut changes = changes_of(&row);
                changes.state = target.as_str().to_owned();
                changes.delete_time = target.is_gone().then(|| row.delete_time.unwrap_or_else(Utc::now));
                let row = db::tenants::save(transaction.connection(), row.id, changes).await?;
                let details = serde_json::json!({ "from": current.as_str(), "to": target.as_str() });
                audit::record(transaction, transition.action(), "tenant", row.id, details).await?;
                load(transaction, row).await
            })
            .await?;
        tracing::info!(tenant.id = %id, state = tenant.state.as_str(), "tenant state changed");
        Ok(tenant)
    }

    /// A tenant's use of each quota against its caps (the platform's view).
    pub async fn quota_usage(&self, request: RequestContext, tenant_id: Uuid) -> Result<Vec<QuotaUsage>> {
        let context = self.resolver.context(tenant_id, request).await?;
        quotas::usage(&self.database, &context).await
    }

    /// Lists one tenant's audit events (the platform's view).
    pub async fn audit_events(
        &self,
        request: RequestContext,
        tenant_id: Uuid,
        filter: audit::AuditFilter,
        page_size: i64,
        page_token: &str,
    ) -> Result<audit::AuditPage> {
        if self.resolver.state(tenant_id).await?.is_none() {
            return Err(tenant_not_found());
        }
        let context = TenantContext::new(tenant_id, request);
        audit::list(&self.database, &context, filter, page_size, page_token).await
    }

    /// Runs `change` in tenant `id`'s transaction on its row, locked and its etag checked
    /// against `expected_revision`; once it committed, invalidates the resolution caches.
    async fn change<F>(
        &self,
        request: RequestContext,
        id: Uuid,
        expected_revision: Option<i64>,
        change: F,
    ) -> Result<Tenant>
    where
        F: for<'t, 'c> AsyncWork<(&'t mut TenantTx<'c>, TenantRow), Result<Tenant>, Future: Send> + Send,
    {
        let context = TenantContext::new(id, request);
        let tenant = self
            .database
            .run(&context, async move |transaction| {
                let row = lock(transaction, expected_revision).await?;
                change((transaction, row)).await
            })
            .await?;
        self.resolver.invalidate(id, None).await;
        Ok(tenant)
    }
}

fn tenant_not_found() -> Error {
    Error::new(Reason::TenantNotFound)
}

fn tenant_deleted() -> Error {
    Error::new(Reason::TenantDeleted)
}

fn map_database_error(error: diesel::result::Error) -> Error {
    error::from_database(error, constraint_error)
}

/// What a violated constraint means when the registry (tenants, their domains and channel
/// bindings) is written; `None` for a constraint this module does not expect (INTERNAL).
/// Public so that tests/api/citus.rs can check every constraint of the schema has a
/// deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    let (reason, field) = match constraint {
        "tenants_slug_key" => (Reason::TenantSlugAlreadyExists, "tenant.slug"),
        "tenants_pkey" => (Reason::TenantAlreadyExists, "tenant.id"),
        "tenant_domains_pkey" => (Reason::TenantDomainAlreadyExists, "tenant.domains"),
        "tenant_channel_bindings_pkey" => (Reason::TenantChannelBindingAlreadyExists, "tenant.channel_bindings"),
        "tenant_domains_tenant_id_fkey" | "tenant_channel_bindings_tenant_id_fkey" => return Some(tenant_not_found()),
        "tenants_plan_fkey" => {
            return Some(Error::invalid(
                Reason::PlanUnknown,
                "tenant.plan",
                "names no plan; create it with CreatePlan",
            ));
        }
        _ => return None,
    };
    Some(Error::already_exists(reason, field))
}
