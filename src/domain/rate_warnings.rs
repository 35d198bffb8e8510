//! Sustained rate-limit warnings (decision 0023): the rate limiter's script reports a tenant
//! whose admitted requests over a window crossed 80% or 100% of its limit times the window
//! (once per threshold and hour, across replicas), and hands it to a bounded channel; this
//! writer, off the request path, counts it in `tenantd_rate_limit_warnings_total` (by plan
//! and threshold, never by tenant) and records a `rate_limit.warning` event in the tenant's
//! own transaction, so it is in the tenant's audit trail and on the event stream, as a
//! `quota.warning` is.

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::audit;
use crate::tenancy::TenantDb;
use crate::tenancy::rate_limiter::RateWarning;

/// How many warnings may wait for the writer; past it the limiter drops them (counted).
pub const RATE_WARNING_QUEUE: usize = 1024;

/// A channel for the limiter's warnings and the writer that drains it.
pub fn channel(database: TenantDb) -> (mpsc::Sender<RateWarning>, RateWarningWriter) {
    let (sender, receiver) = mpsc::channel(RATE_WARNING_QUEUE);
    (sender, RateWarningWriter { database, receiver })
}

/// Records the warnings the rate limiter reports, one at a time.
pub struct RateWarningWriter {
    database: TenantDb,
    receiver: mpsc::Receiver<RateWarning>,
}

impl RateWarningWriter {
    /// Records warnings until `stop` is cancelled or every sender is gone.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let warning = tokio::select! {
                () = stop.cancelled() => return,
                warning = self.receiver.recv() => warning,
            };
            let Some(warning) = warning else {
                return;
            };
            self.record(warning).await;
        }
    }

    /// Counts `warning` by its tenant's plan and records its event; a failure is logged (the
    /// request that crossed was served either way).
    async fn record(&self, warning: RateWarning) {
        let context = warning.context;
        let tenant_id = context.tenant_id();
        let plan = context.plan().map(str::to_owned);
        crate::metrics::record_rate_warning(plan.as_deref().unwrap_or("none"), warning.threshold_percent);
        let window_ms = u64::try_from(warning.window.as_millis()).unwrap_or(u64::MAX);
        let details = json!({
            "threshold_percent": warning.threshold_percent,
            "per_second": warning.limit.per_second,
            "burst": warning.limit.burst,
            "window_ms": window_ms,
            "plan": plan,
        });
        let recorded = self
            .database
            .run(&context, async move |transaction| {
                audit::record(transaction, "rate_limit.warning", "rate_limit", "tenant", details).await
            })
            .await;
        if let Err(error) = recorded {
            tracing::warn!(tenant.id = %tenant_id, error = %error, "rate-limit warning event not recorded");
        }
    }
}
