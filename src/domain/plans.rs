//! Plans: named sets of limits (request rates, caps on counted resources) and setting
//! defaults, managed on the control plane. A tenant has at most one plan (none: unlimited)
//! and its own overrides of the plan's limits; the resolver reads both with the tenant's
//! row and caches the effective limits in the tenant's record.
//!
//! A change to a plan invalidates the cached record of every tenant on it, the same way a
//! suspension does, so it reaches every replica within milliseconds. Plans belong to no
//! tenant: who created and who last changed one is recorded on the plan itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::idempotency::{self, RequestKey};
use super::operators::actor_label;
use super::page::{self, PageToken, fingerprint};
use super::{Slug, check_etag, etag, settings};
use crate::db;
use crate::db::plans::{NewPlanRow, PlanChanges, PlanRow};
use crate::error::{self, Error, Reason, Result, Violations};
use crate::tenancy::resolver::TenantResolver;
pub use crate::tenancy::{LimitName, LimitSet, Limits, Quota, Quotas, RateLimit};
use crate::tenancy::{RequestContext, TenantContext, TenantDb};

/// Most setting defaults in one plan.
pub const MAX_PLAN_SETTINGS: usize = 100;
/// Most tenants' `plan.update` events recorded at once after a plan changed.
const PLAN_EVENT_CONCURRENCY: usize = 8;
/// The share of the pool the `plan.update` events may hold at once (one in this many
/// connections): a plan of thousands of tenants must not take every connection from the
/// requests that read its tenants' new records (decision 0023).
const PLAN_EVENT_POOL_SHARE: usize = 4;
/// Fields `UpdatePlan` may change.
pub const UPDATABLE_FIELDS: &[&str] = &["display_name", "limits", "settings"];

/// A plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Id.
    pub id: Uuid,
    /// Name, unique and immutable.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Limits; absent ones are unlimited.
    pub limits: Limits,
    /// Setting defaults, beneath each tenant's own settings.
    pub settings: BTreeMap<String, Value>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Who last changed it.
    pub updated_by: String,
    /// Etag.
    pub etag: String,
}

impl TryFrom<PlanRow> for Plan {
    type Error = Error;

    fn try_from(row: PlanRow) -> Result<Self> {
        let unreadable =
            |what: &str| Error::internal(anyhow::anyhow!("plan {} has {what} tenantd cannot read", row.name));
        let limits = Limits::from_json(&row.limits).ok_or_else(|| unreadable("limits"))?;
        let settings = serde_json::from_value(row.settings.clone()).map_err(|_| unreadable("settings"))?;
        Ok(Self {
            id: row.id,
            name: row.name,
            display_name: row.display_name,
            limits,
            settings,
            create_time: row.create_time,
            created_by: row.created_by,
            update_time: row.update_time,
            updated_by: row.updated_by,
            etag: etag(row.revision),
        })
    }
}

/// A validated plan to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewPlan {
    /// Name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Limits.
    pub limits: Limits,
    /// Setting defaults.
    pub settings: BTreeMap<String, Value>,
}

/// New values for the fields an update names; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PlanPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New limits (replacing all).
    pub limits: Option<Limits>,
    /// New setting defaults (replacing all).
    pub settings: Option<BTreeMap<String, Value>>,
}

/// One page of plans.
#[derive(Debug, Clone)]
pub struct PlanPage {
    /// The plans, oldest first.
    pub plans: Vec<Plan>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// Validates a plan's name: the rules of a tenant slug, `^[a-z][a-z0-9-]{2,62}$`.
pub fn parse_name(field: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, field, "is required"));
    }
    Slug::parse(name)
        .map(|slug| slug.as_str().to_owned())
        .map_err(|description| Error::invalid(Reason::PlanNameMalformed, field, description))
}

/// Validates limits: every rate and burst at least 1, every cap at least 0.
pub fn check_limits(field: &str, limits: &Limits) -> Result<()> {
    let mut checks = Violations::new();
    for (name, rate) in [("tenant_rate", limits.tenant_rate), ("api_key_rate", limits.api_key_rate)] {
        if let Some(rate) = rate {
            if rate.per_second == 0 {
                checks.add(Reason::LimitsInvalid, format!("{field}.{name}.per_second"), "must be at least 1");
            }
            if rate.burst == 0 {
                checks.add(Reason::LimitsInvalid, format!("{field}.{name}.burst"), "must be at least 1");
            }
        }
    }
    for quota in Quota::ALL {
        if limits.quotas.cap(quota).is_some_and(|cap| cap < 0) {
            checks.add(Reason::LimitsInvalid, format!("{field}.max_{}", quota.as_str()), "must be at least 0");
        }
    }
    for name in limits.unlimited.names().filter(|name| limits.is_set(*name)) {
        checks.add(Reason::LimitsInvalid, format!("{field}.unlimited"), format!("{} is also set", name.as_str()));
    }
    checks.finish(|| Some(()))
}

/// Validates a plan's limits: [`check_limits`], and nothing lifted (in a plan an unset limit
/// is unlimited already; lifting is for a tenant's overrides).
pub fn check_plan_limits(field: &str, limits: &Limits) -> Result<()> {
    check_limits(field, limits)?;
    if limits.unlimited.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        Reason::LimitsInvalid,
        format!("{field}.unlimited"),
        "only a tenant's overrides lift limits: in a plan, leave the limit unset",
    ))
}

/// Validates setting defaults: at most [`MAX_PLAN_SETTINGS`], keys and values as for a
/// tenant's settings.
pub fn check_settings(field: &str, defaults: &BTreeMap<String, Value>) -> Result<()> {
    if defaults.len() > MAX_PLAN_SETTINGS {
        return Err(Error::invalid(Reason::FieldMalformed, field, format!("at most {MAX_PLAN_SETTINGS} settings")));
    }
    let mut checks = Violations::new();
    for (key, value) in defaults {
        checks.check(settings::parse_key(&format!("{field}[{key:?}]"), key));
        checks.check(settings::parse_value(&format!("{field}[{key:?}]"), value.clone()));
    }
    checks.finish(|| Some(()))
}

/// The control plane's operations on plans.
#[derive(Clone)]
pub struct Plans {
    database: TenantDb,
    resolver: Arc<TenantResolver>,
}

impl Plans {
    /// Plans stored through `database`; changes invalidate `resolver`'s caches.
    pub fn new(database: TenantDb, resolver: Arc<TenantResolver>) -> Self {
        Self { database, resolver }
    }

    /// Creates a plan, exactly once per `request_id` (empty: none).
    pub async fn create(&self, request: RequestContext, new: NewPlan, request_id: &str) -> Result<Plan> {
        let created_by = actor_label(request.actor())?;
        let key = RequestKey::new(idempotency::Scope::Platform, "CreatePlan", request_id, &new)?;
        // As CreateTenant: the platform's idempotency records are claimed in a transaction,
        // which is scoped to a fresh id that names no tenant (so no tenant row is visible).
        let context = TenantContext::new(Uuid::now_v7(), request);
        let plan = self
            .database
            .run(&context, async move |transaction| {
                if let Some(replay) = idempotency::begin::<Plan>(transaction, &key).await? {
                    return Ok(replay);
                }
                let row = NewPlanRow {
                    id: Uuid::now_v7(),
                    name: &new.name,
                    display_name: &new.display_name,
                    limits: new.limits.to_json(),
                    settings: settings_json(&new.settings)?,
                    created_by: &created_by,
                    updated_by: &created_by,
                };
                let row = db::plans::insert(transaction.connection(), row)
                    .await
                    .map_err(|error| error::from_database(error, constraint_error))?;
                let plan = Plan::try_from(row)?;
                idempotency::finish(transaction, &key, &plan).await?;
                Ok(plan)
            })
            .await?;
        tracing::info!(plan.name = %plan.name, actor.kind = context.request().actor().kind(), "plan created");
        Ok(plan)
    }

    /// Gets a plan by name.
    pub async fn get(&self, name: &str) -> Result<Plan> {
        let row = db::retry::read(|| {
            let name = name.to_owned();
            self.database.global(async move |connection| Ok(db::plans::find(connection, &name).await?))
        })
        .await?;
        row.ok_or(Error::new(Reason::PlanNotFound))?.try_into()
    }

    /// Lists plans in creation order.
    pub async fn list(&self, page_size: i64, page_token: &str) -> Result<PlanPage> {
        let filter = fingerprint("plans");
        let after = PageToken::decode(page_token, Uuid::nil(), filter)?;
        let mut rows = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::plans::list(connection, after, page_size + 1).await?))
        })
        .await?;
        let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, Uuid::nil(), filter);
        let plans = rows.into_iter().map(Plan::try_from).collect::<Result<_>>()?;
        Ok(PlanPage { plans, next_page_token })
    }

    /// Applies an update to a plan whose revision is `expected_revision` (if given), then
    /// invalidates the cached record of every tenant on the plan.
    pub async fn update(
        &self,
        request: RequestContext,
        name: &str,
        expected_revision: Option<i64>,
        patch: PlanPatch,
    ) -> Result<Plan> {
        let updated_by = actor_label(request.actor())?;
        let name = name.to_owned();
        let changed: Vec<&str> = [
            ("display_name", patch.display_name.is_some()),
            ("limits", patch.limits.is_some()),
            ("settings", patch.settings.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, present)| present.then_some(field))
        .collect();
        // A transaction for the row lock, scoped (as a create's) to an id that names no tenant.
        let context = TenantContext::new(Uuid::now_v7(), request.clone());
        let (plan, revision, tenants) = self
            .database
            .run(&context, async move |transaction| {
                let connection = transaction.connection();
                let row = db::plans::lock(connection, &name).await?.ok_or(Error::new(Reason::PlanNotFound))?;
                check_etag(expected_revision, row.revision)?;
                let current = Plan::try_from(row.clone())?;
                let changes = PlanChanges {
                    display_name: patch.display_name.unwrap_or(current.display_name),
                    limits: patch.limits.unwrap_or(current.limits).to_json(),
                    settings: settings_json(&patch.settings.unwrap_or(current.settings))?,
                    updated_by,
                };
                let row = db::plans::save(connection, row.id, changes).await?;
                let tenants = db::tenants::ids_on_plan(connection, &row.name).await?;
                let revision = row.revision;
                Ok((Plan::try_from(row)?, revision, tenants))
            })
            .await?;
        self.resolver.invalidate_plan(&plan.name, revision).await;
        let recorded = self.record_plan_update(&request, &plan, &changed, &tenants).await;
        tracing::info!(
            plan.name = %plan.name, tenants = tenants.len(), events = recorded, actor.kind = request.actor().kind(),
            "plan updated"
        );
        Ok(plan)
    }

    /// Records a `plan.update` event (resource type `plan`, id the plan's name) in the trail
    /// of every tenant on the plan, so that their event streams carry the change of their
    /// limits. After the plan's commit, one small tenant transaction per tenant,
    /// [`PLAN_EVENT_CONCURRENCY`] at a time (fewer with a small pool, see
    /// [`PLAN_EVENT_POOL_SHARE`]): events belong to a tenant (decision 0015), and
    /// a plan to none. An event that fails is logged and skipped (the plan has changed
    /// either way); returns how many were recorded.
    async fn record_plan_update(
        &self,
        request: &RequestContext,
        plan: &Plan,
        changed: &[&str],
        tenants: &[Uuid],
    ) -> usize {
        use futures_util::StreamExt;
        let details = serde_json::json!({
            "changed_fields": changed, "plan": plan.name, "plan_id": plan.id, "etag": plan.etag,
        });
        futures_util::stream::iter(tenants.iter().copied())
            .map(|tenant_id| {
                let context = TenantContext::new(tenant_id, request.clone());
                let (details, name) = (details.clone(), plan.name.clone());
                async move {
                    let recorded = self
                        .database
                        .run(&context, async move |transaction| {
                            super::audit::record(transaction, "plan.update", "plan", name, details).await
                        })
                        .await;
                    if let Err(error) = &recorded {
                        tracing::warn!(tenant.id = %tenant_id, error = %error, "plan.update event not recorded");
                    }
                    recorded.is_ok()
                }
            })
            .buffer_unordered(self.plan_event_concurrency())
            .filter(|recorded| std::future::ready(*recorded))
            .count()
            .await
    }
}

impl Plans {
    /// How many `plan.update` events are recorded at once: a quarter of the pool, 1 to
    /// [`PLAN_EVENT_CONCURRENCY`].
    fn plan_event_concurrency(&self) -> usize {
        let pool_size = usize::try_from(self.database.pool().config().max_size).unwrap_or(1);
        (pool_size / PLAN_EVENT_POOL_SHARE).clamp(1, PLAN_EVENT_CONCURRENCY)
    }
}

fn settings_json(defaults: &BTreeMap<String, Value>) -> Result<Value> {
    serde_json::to_value(defaults).map_err(|error| Error::internal(error.into()))
}

/// What a violated constraint means when plans are written; `None` for a constraint this
/// module does not expect (INTERNAL). Public so that tests/api/citus.rs can check every
/// constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "plans_name_key" => Some(Error::already_exists(Reason::PlanNameAlreadyExists, "plan.name")),
        "plans_pkey" => Some(Error::already_exists(Reason::PlanAlreadyExists, "plan.id")),
        _ => None,
    }
}
