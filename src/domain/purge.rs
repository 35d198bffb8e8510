//! Purging a deleted tenant for good: the `purge_tenant` long-running operation, its receipt,
//! and the retention sweep that starts it (decision 0020).
//!
//! Phases, each recorded on the operation before the next starts, each safe to repeat:
//! 1. `start`: DELETED → PURGING (audited; every replica's resolution cache is invalidated,
//!    so the tenant is refused everywhere at once), then the tenant's move lock is taken
//!    exclusively once, so that no write admitted before the purge is still in flight, and
//!    the tenant's rows are counted per table in one snapshot (the receipt's counts);
//! 2. `rows`: the rows are deleted table by table, children first, in batches of
//!    `TENANTD_PURGE_BATCH_ROWS`, each batch its own short transaction (the longest is
//!    measured), then the platform idempotency records that replay the tenant's creation;
//! 3. `schema`: the tenant's schema, if any, is dropped;
//! 4. `redis`: every key `t:{<id>}:*` is deleted (Redis down: retried for a while, then the
//!    receipt says the keys were skipped);
//! 5. `verify`: one transaction scans every table with a `tenant_id` column for the tenant's
//!    rows and, finding none, makes the tenant a PURGED tombstone, records the `tenant.purge`
//!    event and stores the receipt; rows found send the purge back to `rows`.
//!
//! A purge cannot be undone or cancelled once claimed: a crash resumes it at its phase.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::operations::{Operation, OperationHandler, OperationKind, OperationRun, Operations, Stop};
use crate::cache::RedisCache;
use crate::db;
use crate::db::purge::{Finished, NewReceipt, PurgeTransition, PurgedTenant};
use crate::db::tenant_schema::Provisioner;
use crate::error::{Error, Reason, Result};
use crate::tenancy::resolver::TenantResolver;
use crate::tenancy::{RequestContext, TenantDb, TenantState, Transition};

/// The created-by of purges the retention sweep starts.
pub const RETENTION_ACTOR: &str = "retention";
/// The progress is recorded at least this often while rows are deleted.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How long the `redis` phase retries an unavailable Redis before it skips the keys.
const REDIS_WAIT: Duration = Duration::from_secs(20);
/// How many times a verification that found rows sends the purge back to `rows`.
const VERIFY_RETRIES: i64 = 3;
/// At most this many purges are started per sweep.
const SWEEP_LIMIT: i64 = 100;

/// The request of a purge, as stored on its operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// The tenant.
    pub tenant_id: Uuid,
}

/// What a purge removed and how it was verified: a platform record that outlives the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReceipt {
    /// The purged tenant.
    pub tenant_id: Uuid,
    /// The operation that purged it.
    pub operation_id: Uuid,
    /// Who purged it: `bootstrap`, `operator:<id>` or `retention`.
    pub purged_by: String,
    /// The tier it was on (`pooled` or `schema`).
    pub isolation_tier: String,
    /// When the purge started.
    pub start_time: DateTime<Utc>,
    /// When it finished.
    pub finish_time: DateTime<Utc>,
    /// Rows removed per table (`schema.table`), counted in one snapshot before removal.
    pub removed_rows: BTreeMap<String, i64>,
    /// Redis keys removed.
    pub redis_keys_removed: i64,
    /// `removed`, or `skipped_unavailable` when Redis stayed down (the keys then expire by
    /// their time to live or stay until deleted by hand).
    pub redis_status: String,
    /// The tables the verification scanned (`schema.table`).
    pub scanned_tables: Vec<String>,
    /// The tenant's rows the verification found in them: always 0.
    pub rows_found: i64,
}

impl TryFrom<db::purge::ReceiptRow> for PurgeReceipt {
    type Error = Error;

    fn try_from(row: db::purge::ReceiptRow) -> Result<Self> {
        let removed_rows = serde_json::from_value(row.removed_rows)
            .map_err(|error| Error::internal(anyhow::Error::new(error).context("purge receipt counts")))?;
        let scanned_tables = row.verification["tables"]
            .as_array()
            .map(|tables| tables.iter().filter_map(|table| table.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Ok(Self {
            tenant_id: row.subject_tenant_id,
            operation_id: row.operation_id,
            purged_by: row.purged_by,
            isolation_tier: row.isolation_tier,
            start_time: row.start_time,
            finish_time: row.finish_time,
            removed_rows,
            redis_keys_removed: row.redis["keys"].as_i64().unwrap_or_default(),
            redis_status: row.redis["status"].as_str().unwrap_or_default().to_owned(),
            scanned_tables,
            rows_found: row.verification["rows_found"].as_i64().unwrap_or_default(),
        })
    }
}

/// Starts purges (the PurgeTenant RPC and the retention sweep) and reads receipts.
#[derive(Clone)]
pub struct Purges {
    operations: Operations,
    database: TenantDb,
    retention: Duration,
    provisioner_configured: bool,
}

impl Purges {
    /// Purges started through `operations`; the sweep purges tenants deleted more than
    /// `retention` ago. Purges run through `provisioner`'s role: without one, PurgeTenant is
    /// UNAVAILABLE `SCHEMA_TIER_UNAVAILABLE` and the sweep starts nothing.
    pub fn new(operations: Operations, database: TenantDb, retention: Duration, provisioner: &Provisioner) -> Self {
        Self { operations, database, retention, provisioner_configured: provisioner.is_configured() }
    }

    /// Starts purging a DELETED tenant (FAILED_PRECONDITION `TENANT_NOT_DELETED` in any
    /// other live state). For a tenant being purged it returns the unfinished purge (or
    /// starts a new one if the last was abandoned); for a PURGED tenant the operation that
    /// purged it (FAILED_PRECONDITION `TENANT_PURGED` once that operation was deleted: the
    /// receipt remains).
    pub async fn start(&self, request: &RequestContext, tenant_id: Uuid) -> Result<Operation> {
        if !self.provisioner_configured {
            return Err(Error::new(Reason::SchemaTierUnavailable));
        }
        let state = self.state(tenant_id).await?;
        state.after(Transition::StartPurge).map_err(Error::new)?;
        let latest = self.latest_purge(tenant_id).await?;
        match (state, latest) {
            (TenantState::Purged, Some(operation)) if operation.state.done() => return Ok(operation),
            (TenantState::Purged, _) => return Err(Error::new(Reason::TenantPurged)),
            (TenantState::Purging, Some(operation)) if !operation.state.done() => return Ok(operation),
            _ => {}
        }
        let body = serde_json::to_value(PurgeRequest { tenant_id }).map_err(|error| Error::internal(error.into()))?;
        self.operations.start(request, OperationKind::PurgeTenant, Some(tenant_id), body, "start").await
    }

    /// The receipt of the tenant's latest purge (NOT_FOUND `PURGE_RECEIPT_NOT_FOUND`).
    pub async fn receipt(&self, tenant_id: Uuid) -> Result<PurgeReceipt> {
        let row = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::purge::latest_receipt(connection, tenant_id).await?))
        })
        .await?;
        row.ok_or(Error::new(Reason::PurgeReceiptNotFound))?.try_into()
    }

    /// Starts a purge, as `retention`, of every tenant deleted more than the retention ago
    /// that no operation acts on (at most [`SWEEP_LIMIT`]); returns how many it started.
    /// Every replica sweeps: one whose start loses the race to another's (the index of one
    /// unfinished operation per tenant) skips that tenant.
    pub async fn sweep(&self) -> Result<usize> {
        if !self.provisioner_configured {
            return Ok(0);
        }
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let due = self
            .database
            .global(async move |connection| Ok(db::purge::due_for_purge(connection, retention_ms, SWEEP_LIMIT).await?))
            .await?;
        let mut started = 0;
        for tenant_id in due {
            let body =
                serde_json::to_value(PurgeRequest { tenant_id }).map_err(|error| Error::internal(error.into()))?;
            match self
                .operations
                .start_by(RETENTION_ACTOR, OperationKind::PurgeTenant, Some(tenant_id), body, "start")
                .await
            {
                Ok(operation) => {
                    started += 1;
                    tracing::info!(tenant.id = %tenant_id, operation.id = %operation.id, "retention purge started");
                }
                Err(error) if error.reason() == Reason::TenantOperationInProgress => {}
                Err(error) => return Err(error),
            }
        }
        Ok(started)
    }

    /// Sweeps every `every` until `stop` (the first sweep after one interval).
    pub async fn sweep_until(self, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(error = %error, "purge retention sweep failed");
            }
        }
    }

    /// How often a replica sweeps: ten operation poll intervals, at most a minute.
    pub fn sweep_interval(poll: Duration) -> Duration {
        (poll * 10).min(Duration::from_secs(60))
    }

    async fn state(&self, tenant_id: Uuid) -> Result<TenantState> {
        let row = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::tenants::find_by_id(connection, tenant_id).await?))
        })
        .await?
        .ok_or(Error::new(Reason::TenantNotFound))?;
        TenantState::parse(&row.state).ok_or_else(|| Error::internal(anyhow::anyhow!("tenant has unknown state")))
    }

    async fn latest_purge(&self, tenant_id: Uuid) -> Result<Option<Operation>> {
        let kind = OperationKind::PurgeTenant.as_str();
        let id = self
            .database
            .global(async move |connection| Ok(db::purge::latest_operation(connection, tenant_id, kind).await?))
            .await?;
        match id {
            Some(id) => Ok(Some(self.operations.get(id).await?)),
            None => Ok(None),
        }
    }
}

/// Runs `purge_tenant` operations.
pub struct PurgeHandler {
    database: TenantDb,
    provisioner: Provisioner,
    resolver: Arc<TenantResolver>,
    redis: RedisCache,
    batch_rows: i64,
    usage_flush: Duration,
}

impl PurgeHandler {
    /// Purges through `provisioner`'s role in batches of `batch_rows`, invalidating
    /// `resolver`, removing keys from `redis`, and waking the event stream of `database`
    /// after the transactions that record events. The `redis` phase first waits one
    /// `usage_flush` interval, so that usage counted before the tenant was deleted has been
    /// written to Redis by every replica and is removed with the rest.
    pub fn new(
        database: TenantDb,
        provisioner: Provisioner,
        resolver: Arc<TenantResolver>,
        redis: RedisCache,
        batch_rows: i64,
        usage_flush: Duration,
    ) -> Self {
        Self { database, provisioner, resolver, redis, batch_rows: batch_rows.max(1), usage_flush }
    }

    async fn run_purge(&self, run: &OperationRun) -> Result<serde_json::Value, Stop> {
        let operation = &run.operation;
        let PurgeRequest { tenant_id } = serde_json::from_value(operation.request.clone())
            .map_err(|error| Stop::Failed(Error::internal(error.into())))?;
        let mut connection = self.provisioner.connect().await?;
        let database = |error| Stop::Interrupted(Error::from(error));
        let (actor_type, actor_id) = audit_actor(&operation.created_by);
        let request_id = operation.id.to_string();
        let transition = |transition: Transition, from: TenantState, to: TenantState| PurgeTransition {
            from: from.as_str(),
            to: to.as_str(),
            action: transition.action(),
            actor_type,
            actor_id,
            request_id: &request_id,
        };
        let mut details = operation.progress.clone();
        let mut phase = operation.phase.clone();
        if phase == "start" {
            let start = transition(Transition::StartPurge, TenantState::Deleted, TenantState::Purging);
            let started = db::purge::start(&mut connection, tenant_id, &start, decide_start).await.map_err(database)?;
            let Some((tenant, decision)) = started else {
                return Err(Stop::Failed(Error::new(Reason::TenantNotFound)));
            };
            if decision.map_err(|reason| Stop::Failed(Error::new(reason)))? {
                self.database.events_committed(tenant_id);
            }
            self.resolver.invalidate(tenant_id, None).await;
            let refused_time = Utc::now();
            details = self.count(&mut connection, tenant_id, &tenant, &details).await?;
            details["refused_time"] = refused_time.to_rfc3339().into();
            run.checkpoint("rows", 10, details.clone()).await?;
            phase = "rows".to_owned();
        }
        if phase == "rows" {
            self.delete_rows(run, &mut connection, tenant_id, &mut details).await?;
            run.checkpoint("schema", 86, details.clone()).await?;
            phase = "schema".to_owned();
        }
        if phase == "schema" {
            // Also on the pooled tier: a schema an abandoned move left behind goes too.
            let dropping = Instant::now();
            db::tenant_schema::drop_schema(&mut connection, tenant_id).await.map_err(database)?;
            // One transaction with the schema's tables locked exclusively (only this tenant's).
            details["schema_drop_ms"] = ((dropping.elapsed().as_secs_f64() * 100_000.0).round() / 100.0).into();
            run.checkpoint("redis", 90, details.clone()).await?;
            phase = "redis".to_owned();
        }
        if phase == "redis" {
            tokio::time::sleep(self.usage_wait(&details)).await;
            details["redis"] = self.delete_keys(run, tenant_id).await?;
            run.checkpoint("verify", 95, details.clone()).await?;
            phase = "verify".to_owned();
        }
        if phase == "verify" {
            let finish = transition(Transition::FinishPurge, TenantState::Purging, TenantState::Purged);
            let start_time = details["start_time"]
                .as_str()
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .map_or(operation.create_time, |time| time.with_timezone(&Utc));
            let receipt = NewReceipt {
                operation_id: operation.id,
                purged_by: &operation.created_by,
                isolation_tier: details["isolation_tier"].as_str().unwrap_or("pooled"),
                start_time,
                removed_rows: details["counts"].clone(),
                redis: details["redis"].clone(),
            };
            let finished =
                db::purge::verify_and_finish(&mut connection, tenant_id, &finish, &receipt, run.owner(), "done")
                    .await
                    .map_err(database)?;
            match finished {
                Finished::Done(scanned) => {
                    self.database.events_committed(tenant_id);
                    self.resolver.invalidate(tenant_id, None).await;
                    tracing::info!(tenant.id = %tenant_id, tables_scanned = scanned, "tenant purged");
                }
                Finished::RowsLeft(left) => {
                    let retries = details["verify_retries"].as_i64().unwrap_or_default() + 1;
                    tracing::warn!(tenant.id = %tenant_id, ?left, retries, "purge verification found rows; deleting again");
                    if retries > VERIFY_RETRIES {
                        return Err(Stop::Failed(Error::new(Reason::PurgeVerificationFailed)));
                    }
                    details["verify_retries"] = retries.into();
                    details["rows_left"] = serde_json::to_value(&left).unwrap_or_default();
                    run.checkpoint("rows", 10, details).await?;
                    return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("purge verification found rows"))));
                }
                Finished::LeaseLost => return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost")))),
            }
        }
        // `done`: the receipt is stored; answer with it.
        let receipt = self.stored_receipt(&mut connection, tenant_id, operation.id).await?;
        Ok(serde_json::json!({
            "tenant_id": tenant_id,
            "removed_rows": receipt.removed_rows.values().sum::<i64>(),
            "redis_keys_removed": receipt.redis_keys_removed,
            "tables_scanned": receipt.scanned_tables.len(),
            "rows_found": receipt.rows_found,
        }))
    }

    /// How long the `redis` phase still waits for usage counted before the tenant was refused
    /// everywhere: one usage flush interval (and 100 ms) from the moment every replica's cache
    /// was invalidated (`refused_time`), of which the `rows` and `schema` phases usually took
    /// all. Without a recorded time (a purge started before it was recorded), a whole interval.
    fn usage_wait(&self, details: &serde_json::Value) -> Duration {
        let interval = self.usage_flush + Duration::from_millis(100);
        let Some(refused) = details["refused_time"].as_str().and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        else {
            return interval;
        };
        let since = (Utc::now() - refused.with_timezone(&Utc)).to_std().unwrap_or_default();
        interval.saturating_sub(since)
    }

    /// The `start` phase after the state change: waits out in-flight writes, then counts.
    async fn count(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        tenant: &PurgedTenant,
        previous: &serde_json::Value,
    ) -> Result<serde_json::Value, Stop> {
        let database = |error| Stop::Interrupted(Error::from(error));
        db::purge::wait_for_writes(connection, tenant_id).await.map_err(database)?;
        let counts = db::purge::count(connection, tenant_id).await.map_err(database)?;
        let start_time = previous["start_time"].as_str().map_or_else(|| Utc::now().to_rfc3339(), str::to_owned);
        Ok(serde_json::json!({
            "isolation_tier": tenant.isolation_tier,
            "start_time": start_time,
            "total_rows": counts.values().sum::<i64>(),
            "counts": counts,
            "removed_rows": 0,
            "batches": 0,
            "longest_batch_ms": 0.0,
        }))
    }

    /// The `rows` phase: batches, children first, then the platform idempotency records.
    async fn delete_rows(
        &self,
        run: &OperationRun,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        details: &mut serde_json::Value,
    ) -> Result<(), Stop> {
        let database = |error| Stop::Interrupted(Error::from(error));
        let tables = db::purge::tables_to_delete(connection).await.map_err(database)?;
        let total = details["total_rows"].as_i64().unwrap_or_default().max(1);
        let mut removed = details["removed_rows"].as_i64().unwrap_or_default();
        let mut batches = details["batches"].as_i64().unwrap_or_default();
        let mut longest_ms = details["longest_batch_ms"].as_f64().unwrap_or_default();
        let mut last_checkpoint = Instant::now();
        for table in &tables {
            let key = db::purge::key_columns(connection, table).await.map_err(database)?;
            // The cursor is not recorded: after a crash the table's batches start again at its
            // first remaining row, which is the same "delete what is left".
            let mut after = None;
            loop {
                if run.lost().is_cancelled() {
                    return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost"))));
                }
                let started = Instant::now();
                let batch =
                    db::purge::delete_batch(connection, tenant_id, table, &key, after.as_ref(), self.batch_rows)
                        .await
                        .map_err(database)?;
                longest_ms = longest_ms.max(started.elapsed().as_secs_f64() * 1000.0);
                batches += 1;
                removed += batch.deleted as i64;
                if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                    record_rows(details, removed, batches, longest_ms);
                    run.checkpoint("rows", rows_percent(removed, total), details.clone()).await?;
                    last_checkpoint = Instant::now();
                }
                match batch.last {
                    Some(last) if (batch.deleted as i64) >= self.batch_rows => after = Some(last),
                    _ => break,
                }
            }
        }
        removed += db::purge::delete_platform_idempotency(connection, tenant_id).await.map_err(database)? as i64;
        record_rows(details, removed, batches, longest_ms);
        Ok(())
    }

    /// The `redis` phase: deletes the tenant's keys, retrying an unavailable Redis for
    /// [`REDIS_WAIT`]; returns what the receipt records.
    async fn delete_keys(&self, run: &OperationRun, tenant_id: Uuid) -> Result<serde_json::Value, Stop> {
        let deadline = Instant::now() + REDIS_WAIT;
        loop {
            if let Some(keys) = self.redis.delete_tenant_keys(tenant_id).await {
                return Ok(serde_json::json!({"status": "removed", "keys": keys}));
            }
            if Instant::now() >= deadline {
                tracing::warn!(tenant.id = %tenant_id, "redis unavailable; the purge skips the tenant's keys");
                return Ok(serde_json::json!({"status": "skipped_unavailable", "keys": 0}));
            }
            if run.lost().is_cancelled() {
                return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost"))));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            // The health task marks Redis available again; a probe here does not wait for it.
            self.redis.probe().await;
        }
    }

    async fn stored_receipt(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        operation_id: Uuid,
    ) -> Result<PurgeReceipt, Stop> {
        let row = db::purge::latest_receipt_as_owner(connection, tenant_id)
            .await
            .map_err(|error| Stop::Interrupted(error.into()))?;
        match row {
            Some(row) if row.operation_id == operation_id => Ok(row.try_into()?),
            _ => Err(Stop::Failed(Error::internal(anyhow::anyhow!("purge {operation_id} finished without a receipt")))),
        }
    }
}

/// Whether the `start` transition applies to a tenant in `tenant.state`: DELETED (yes),
/// PURGING (already: a repeated `start`), anything else is refused by the state table.
fn decide_start(tenant: &PurgedTenant) -> std::result::Result<bool, Reason> {
    let state = TenantState::parse(&tenant.state).ok_or(Reason::Internal)?;
    match state.after(Transition::StartPurge)? {
        TenantState::Purging => Ok(state == TenantState::Deleted),
        _ => Err(Reason::TenantPurged),
    }
}

fn record_rows(details: &mut serde_json::Value, removed: i64, batches: i64, longest_ms: f64) {
    details["removed_rows"] = removed.into();
    details["batches"] = batches.into();
    details["longest_batch_ms"] = ((longest_ms * 100.0).round() / 100.0).into();
}

fn rows_percent(removed: i64, total: i64) -> i32 {
    10 + i32::try_from((removed.min(total) * 75) / total.max(1)).unwrap_or(75)
}

/// The audit actor of an operation's events, from its created-by: `bootstrap`,
/// `operator:<id>` (operator, id) or `retention` (platform, `retention`).
fn audit_actor(created_by: &str) -> (&'static str, &str) {
    if created_by == "bootstrap" {
        return ("bootstrap", "");
    }
    match created_by.strip_prefix("operator:") {
        Some(operator_id) => ("operator", operator_id),
        None => ("platform", created_by),
    }
}

impl OperationHandler for PurgeHandler {
    fn kind(&self) -> OperationKind {
        OperationKind::PurgeTenant
    }

    fn run<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<serde_json::Value, Stop>> {
        Box::pin(self.run_purge(run))
    }

    fn abandon<'r>(&'r self, _run: &'r OperationRun) -> BoxFuture<'r, Result<(), Stop>> {
        // Nothing a purge did can be undone: the tenant stays PURGING and a new PurgeTenant
        // resumes the removal.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_actor_comes_from_the_operations_creator() {
        assert_eq!(audit_actor("bootstrap"), ("bootstrap", ""));
        assert_eq!(audit_actor("operator:abc"), ("operator", "abc"));
        assert_eq!(audit_actor("retention"), ("platform", "retention"));
    }

    #[test]
    fn progress_in_the_rows_phase_runs_from_10_to_85() {
        assert_eq!(rows_percent(0, 100), 10);
        assert_eq!(rows_percent(100, 100), 85);
        assert_eq!(rows_percent(500, 100), 85);
        assert_eq!(rows_percent(0, 0), 10);
    }
}
