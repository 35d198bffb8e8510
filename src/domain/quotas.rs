//! Exact quotas on counted resources: a create charges its tenant's counter in its own
//! transaction, after its insert, with one statement that refuses to pass the cap (see
//! [`crate::db::quotas::charge`]); a delete releases what it freed. Counters are kept only
//! while a cap applies: a tenant (or a quota) without a cap pays nothing. So a counter is
//! trusted only once it was recounted from the rows, under its lock, at least
//! [`crate::tenancy::resolver::TenantResolver::recount_grace`] after the tenant's limits last changed (by then no replica still creates
//! by the old, uncapped limits); until then each capped charge recounts (decision 0016,
//! "Counting only what is capped"). A charge that crosses
//! 80% or 100% of a cap records a `quota.warning` event (in the same transaction, so it is
//! on the event stream and in the tenant's audit trail) and counts it in the
//! `tenantd_quota_warnings` metric, labelled by plan and quota, never by tenant.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit;
use crate::db;
use crate::db::tenant_tx::TenantTx;
use crate::error::{Error, Reason, Result};
pub use crate::tenancy::Quota;
use crate::tenancy::{Quotas, TenantContext, TenantDb};

/// The thresholds, in percent of a cap, whose crossing is a warning.
pub const WARNING_THRESHOLDS: [i64; 2] = [80, 100];

/// How long a create admitted by a tenant's record may take to commit, beyond the age of the
/// record (part of [`crate::tenancy::resolver::TenantResolver::recount_grace`]).
pub const COMMIT_BOUND: Duration = Duration::from_secs(10);

/// What a create checks its charges against: the tenant's plan and effective caps, as the
/// request's context has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaScope {
    plan: Option<String>,
    quotas: Quotas,
    trusted_from: Option<DateTime<Utc>>,
}

impl QuotaScope {
    /// The scope of a request's tenant.
    pub fn of(context: &TenantContext) -> Self {
        Self {
            plan: context.plan().map(str::to_owned),
            quotas: *context.quotas(),
            trusted_from: context.counters_trusted_from(),
        }
    }

    /// The earliest recount a counter may be trusted from (`None`: none, always recount).
    fn trusted_from(&self) -> Option<DateTime<Utc>> {
        self.trusted_from
    }

    /// The plan's name as metrics label it (`none` without a plan).
    fn plan_label(&self) -> &str {
        self.plan.as_deref().unwrap_or("none")
    }
}

/// Charges `amount` (at least 1) to the transaction's tenant's `quota`; RESOURCE_EXHAUSTED
/// (`QUOTA_EXCEEDED`, with a `google.rpc.QuotaFailure` naming the quota) if that would pass
/// the cap. Nothing at all (no statement) if no cap applies. Call inside the create's
/// transaction, after its insert: a refusal rolls the insert back.
pub async fn charge(transaction: &mut TenantTx<'_>, scope: &QuotaScope, quota: Quota, amount: i64) -> Result<()> {
    let Some(cap) = scope.quotas.cap(quota) else {
        return Ok(());
    };
    if amount <= 0 {
        return Ok(());
    }
    let refused = || exceeded(quota, cap);
    if amount > cap {
        return Err(refused());
    }
    let trusted_from = scope.trusted_from();
    let database_error = |error| crate::error::from_database(error, constraint_error);
    let charged =
        db::quotas::charge(transaction, quota.as_str(), amount, cap, trusted_from).await.map_err(database_error)?;
    let used = match charged {
        Some((used, Some(true))) => used,
        // A counter just created: count what exists.
        Some(_) => recount(transaction, quota).await?,
        None => match db::quotas::counter(transaction, quota.as_str(), trusted_from).await? {
            Some((_, Some(true))) => return Err(refused()),
            _ => recount(transaction, quota).await?,
        },
    };
    if used > cap {
        return Err(refused());
    }
    warn_on_crossing(transaction, scope, quota, used - amount, used, cap).await
}

/// Recounts the quota's counter (locked by the charge before) from the rows, this
/// transaction's own included: the count after the charge.
async fn recount(transaction: &mut TenantTx<'_>, quota: Quota) -> Result<i64> {
    db::quotas::recount(transaction, quota.as_str())
        .await
        .map_err(|error| crate::error::from_database(error, constraint_error))?
        .ok_or_else(|| Error::internal(anyhow::anyhow!("the {} counter vanished under its lock", quota.as_str())))
}

/// Releases `amount` of the transaction's tenant's `quota` (a delete freed it), if a cap
/// applies (no counter is kept otherwise).
pub async fn release(transaction: &mut TenantTx<'_>, scope: &QuotaScope, quota: Quota, amount: i64) -> Result<()> {
    if amount > 0 && scope.quotas.cap(quota).is_some() {
        db::quotas::release(transaction, quota.as_str(), amount)
            .await
            .map_err(|error| crate::error::from_database(error, constraint_error))?;
    }
    Ok(())
}

/// Charges or releases the difference `delta` (an update that grew or shrank a size).
pub async fn adjust(transaction: &mut TenantTx<'_>, scope: &QuotaScope, quota: Quota, delta: i64) -> Result<()> {
    if delta >= 0 {
        charge(transaction, scope, quota, delta).await
    } else {
        release(transaction, scope, quota, -delta).await
    }
}

/// The error of a refused charge.
pub fn exceeded(quota: Quota, cap: i64) -> Error {
    Error::new(Reason::QuotaExceeded)
        .with_quota_failure(quota.as_str(), format!("the plan allows at most {cap} {}", quota.as_str()))
}

async fn warn_on_crossing(
    transaction: &mut TenantTx<'_>,
    scope: &QuotaScope,
    quota: Quota,
    before: i64,
    after: i64,
    cap: i64,
) -> Result<()> {
    for threshold in WARNING_THRESHOLDS {
        // The smallest count at or above `threshold` percent of the cap.
        let mark = (cap.saturating_mul(threshold) + 99) / 100;
        if cap == 0 || before >= mark || after < mark {
            continue;
        }
        let details = json!({
            "quota": quota.as_str(), "threshold_percent": threshold, "used": after, "limit": cap, "plan": scope.plan,
        });
        audit::record(transaction, "quota.warning", "quota", quota.as_str(), details).await?;
        crate::metrics::record_quota_warning(scope.plan_label(), quota.as_str(), threshold);
    }
    Ok(())
}

/// A tenant's use of one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The quota.
    pub quota: Quota,
    /// How much is used.
    pub used: i64,
    /// The cap; `None` is unlimited.
    pub limit: Option<i64>,
}

/// The context's tenant's use of every quota, against its caps (one read, counted from the
/// rows: counters exist only while a cap applies).
pub async fn usage(database: &TenantDb, context: &TenantContext) -> Result<Vec<QuotaUsage>> {
    let counters = database.read(context, async move |read| Ok(db::quotas::live_usage(read).await?)).await?;
    let quotas = context.quotas();
    Ok(Quota::ALL
        .into_iter()
        .map(|quota| QuotaUsage {
            quota,
            used: counters.iter().find(|(name, _)| name == quota.as_str()).map_or(0, |(_, used)| *used),
            limit: quotas.cap(quota),
        })
        .collect())
}

/// What a violated constraint means when a counter is written; `None` for a constraint this
/// module does not expect (INTERNAL). A charge's upsert resolves a taken key itself (ON
/// CONFLICT), so a violated key is answered only should that ever change: as a concurrent
/// change to retry. Public so that tests/api/citus.rs can check every constraint of the
/// schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "tenant_quota_usage_pkey" => Some(Error::etag_mismatch()),
        "tenant_quota_usage_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        _ => None,
    }
}
