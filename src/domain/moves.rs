//! Moving a live tenant between the pooled and the schema tier: the `move_tenant`
//! long-running operation (decision 0019).
//!
//! Phases, each recorded on the operation before it starts, each safe to repeat:
//! 1. `copy`: the target is provisioned (a schema target gets its schema) and the tenant's
//!    rows are copied in one snapshot, replacing anything an interrupted copy left;
//! 2. `catch_up`: rounds that upsert what changed on the source since and delete what went,
//!    until a round changes few rows; that round also verifies, in its snapshot, row counts
//!    and content hashes of every table on both tiers;
//! 3. `cutover`: one transaction that takes the tenant's move lock exclusively (its writes
//!    wait, other tenants' do not), syncs and verifies only the rows written since that
//!    snapshot (and the row counts), switches `tenants.isolation_tier`, records the audit
//!    event `tenant.tier_moved` and the next phase; then every replica's resolution cache is
//!    invalidated;
//! 4. `drain`: requests routed by a previous resolution finish against the source (frozen,
//!    complete) for `move_drain`;
//! 5. `cleanup`: the source rows (or schema) are removed.
//!
//! Cancel and crashes before the cutover leave the tenant on its source tier: cancel drops
//! what the move built; a crash resumes at `copy`. After the cutover the move only finishes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::operations::{Operation, OperationHandler, OperationKind, OperationRun, Operations, Stop};
use crate::db;
use crate::db::audit::NewAuditEvent;
use crate::db::moves::{CatchUp, CutOver, TableCheck};
use crate::db::tenant_schema::{IsolationTier, Provisioner};
use crate::error::{Error, Reason, Result};
use crate::tenancy::resolver::TenantResolver;
use crate::tenancy::{RequestContext, TenantDb};

/// A catch-up round that changed at most this many rows ends the catch-up.
const CATCH_UP_SETTLED_ROWS: usize = 1000;
/// At most this many catch-up rounds before the cutover.
const CATCH_UP_ROUNDS: usize = 8;
/// The audit action the cutover records (decision 0015: the event stream delivers it).
pub const TIER_MOVED: &str = "tenant.tier_moved";

/// The request of a move, as stored on its operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveRequest {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Where it is.
    pub source: IsolationTier,
    /// Where it goes.
    pub target: IsolationTier,
}

/// Starts moves (the MoveTenant RPC).
#[derive(Clone)]
pub struct Moves {
    operations: Operations,
    provisioner: Provisioner,
    resolver: Arc<TenantResolver>,
}

impl Moves {
    /// Moves started through `operations`; a schema target needs `provisioner`.
    pub fn new(operations: Operations, provisioner: Provisioner, resolver: Arc<TenantResolver>) -> Self {
        Self { operations, provisioner, resolver }
    }

    /// Starts moving an ACTIVE tenant to `target`: FAILED_PRECONDITION if it is already
    /// there (TENANT_ALREADY_IN_TIER) or another operation on it has not finished.
    pub async fn start(&self, request: &RequestContext, tenant_id: Uuid, target: IsolationTier) -> Result<Operation> {
        if !self.provisioner.is_configured() {
            return Err(Error::new(Reason::SchemaTierUnavailable));
        }
        // Fresh from the database: the tier decides the move's source.
        self.resolver.invalidate(tenant_id, None).await;
        let record = self.resolver.require_active(tenant_id).await?;
        if record.tier == target {
            return Err(Error::new(Reason::TenantAlreadyInTier));
        }
        let body = MoveRequest { tenant_id, source: record.tier, target };
        let body = serde_json::to_value(&body).map_err(|error| Error::internal(error.into()))?;
        self.operations.start(request, OperationKind::MoveTenant, Some(tenant_id), body, "copy").await
    }
}

/// Runs `move_tenant` operations.
pub struct MoveHandler {
    provisioner: Provisioner,
    resolver: Arc<TenantResolver>,
    database: TenantDb,
    drain: Duration,
}

impl MoveHandler {
    /// Moves through `provisioner`'s role, invalidating `resolver` at the cutover (and waking
    /// `database`'s event stream for the cutover's audit event) and waiting `drain` before
    /// removing the source.
    pub fn new(provisioner: Provisioner, resolver: Arc<TenantResolver>, database: TenantDb, drain: Duration) -> Self {
        Self { provisioner, resolver, database, drain }
    }

    async fn connect(&self) -> Result<AsyncPgConnection, Stop> {
        Ok(self.provisioner.connect().await?)
    }

    async fn run_move(&self, run: &OperationRun) -> Result<serde_json::Value, Stop> {
        let request: MoveRequest = serde_json::from_value(run.operation.request.clone())
            .map_err(|error| Stop::Failed(Error::internal(error.into())))?;
        let MoveRequest { tenant_id, source, target } = request;
        let mut connection = self.connect().await?;
        let database = |error| Stop::Interrupted(Error::from(error));
        let mut details = run.operation.progress.clone();
        if !matches!(run.operation.phase.as_str(), "drain" | "cleanup") {
            // Before the cutover: (re)build the target from the start.
            if run.checkpoint("copy", 5, serde_json::json!({})).await? {
                return self.cancel(&mut connection, tenant_id, target).await;
            }
            if target == IsolationTier::Schema {
                db::tenant_schema::provision(&mut connection, tenant_id).await.map_err(database)?;
            }
            let started = Instant::now();
            let copied = db::moves::copy(&mut connection, tenant_id, source, target).await.map_err(database)?;
            let copied: serde_json::Map<String, serde_json::Value> =
                copied.into_iter().map(|(table, rows)| (table, rows.into())).collect();
            let copy_ms = started.elapsed().as_millis() as u64;
            details = serde_json::json!({"copied_rows": copied, "copy_ms": copy_ms});
            let mut settled = None;
            for round in 1..=CATCH_UP_ROUNDS {
                if run.checkpoint("catch_up", 40 + 5 * round as i32, details.clone()).await? {
                    return self.cancel(&mut connection, tenant_id, target).await;
                }
                // The last round settles whatever it changed: the cutover syncs the rest.
                let settled_rows = if round == CATCH_UP_ROUNDS { usize::MAX } else { CATCH_UP_SETTLED_ROWS };
                let caught_up = db::moves::catch_up(&mut connection, tenant_id, source, target, settled_rows)
                    .await
                    .map_err(database)?;
                details["catch_up_rounds"] = round.into();
                match caught_up {
                    CatchUp::Changing(changed) => details["last_round_changed_rows"] = changed.into(),
                    CatchUp::Settled { changed, settled: snapshot } => {
                        details["last_round_changed_rows"] = changed.into();
                        details["verified_before_cutover"] = serde_json::to_value(&snapshot.checks).unwrap_or_default();
                        settled = Some(snapshot);
                        break;
                    }
                    CatchUp::Mismatch(source_checks, target_checks) => {
                        return self
                            .verification_failed(&mut connection, tenant_id, target, source_checks, target_checks)
                            .await;
                    }
                }
            }
            let Some(settled) = settled else {
                return Err(Stop::Failed(Error::internal(anyhow::anyhow!("the last catch-up round did not settle"))));
            };
            if run.checkpoint("cutover", 85, details.clone()).await? {
                return self.cancel(&mut connection, tenant_id, target).await;
            }
            let (actor_type, actor_id) = match run.operation.created_by.split_once(':') {
                Some((kind, id)) => (kind.to_owned(), id.to_owned()),
                None => (run.operation.created_by.clone(), String::new()),
            };
            let request_id = format!("operations/{}", run.operation.id);
            let event = NewAuditEvent {
                actor_type: &actor_type,
                actor_id,
                action: TIER_MOVED,
                resource_type: "tenant",
                resource_id: tenant_id.to_string(),
                request_id: &request_id,
                details: serde_json::json!({
                    "from": source.as_str(), "to": target.as_str(), "operation_id": run.operation.id.to_string(),
                }),
            };
            let paused = Instant::now();
            let cut = db::moves::cut_over(
                &mut connection,
                tenant_id,
                source,
                target,
                &settled,
                (run.operation.id, run.owner()),
                "drain",
                event,
            )
            .await
            .map_err(database)?;
            let pause_ms = paused.elapsed().as_millis() as u64;
            match cut {
                CutOver::Done(checks) => {
                    self.resolver.invalidate(tenant_id, None).await;
                    self.database.events_committed(tenant_id);
                    details["write_pause_ms"] = pause_ms.into();
                    details["verified"] = serde_json::to_value(&checks).unwrap_or_default();
                    tracing::info!(tenant.id = %tenant_id, pause_ms, "tenant move cut over");
                    run.checkpoint("drain", 90, details.clone()).await?;
                }
                CutOver::Mismatch(source_checks, target_checks) => {
                    return self
                        .verification_failed(&mut connection, tenant_id, target, source_checks, target_checks)
                        .await;
                }
                CutOver::LeaseLost => return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost")))),
            }
        }
        tokio::time::sleep(self.drain).await;
        run.checkpoint("cleanup", 95, details).await?;
        self.discard_source(&mut connection, tenant_id, source).await?;
        Ok(serde_json::json!({"tenant_id": tenant_id, "isolation_tier": target.as_str()}))
    }

    /// The target differs from the source: the tenant stays on its source, the target goes.
    async fn verification_failed(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        target: IsolationTier,
        source_checks: Vec<TableCheck>,
        target_checks: Vec<TableCheck>,
    ) -> Result<serde_json::Value, Stop> {
        tracing::error!(
            tenant.id = %tenant_id, ?source_checks, ?target_checks,
            "tenant move verification failed; the tenant stays on its source tier"
        );
        self.discard_target(connection, tenant_id, target).await?;
        Err(Stop::Failed(Error::new(Reason::TenantMoveVerificationFailed)))
    }

    /// Cancelled before the cutover: the tenant never left its source; drop the target copy.
    async fn cancel(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        target: IsolationTier,
    ) -> Result<serde_json::Value, Stop> {
        self.discard_target(connection, tenant_id, target).await?;
        Err(Stop::Cancelled)
    }

    async fn discard_target(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        target: IsolationTier,
    ) -> Result<(), Stop> {
        match target {
            IsolationTier::Schema => db::tenant_schema::drop_schema(connection, tenant_id).await,
            IsolationTier::Pooled => db::moves::clear_pooled(connection, tenant_id).await,
        }
        .map_err(|error| Stop::Interrupted(Error::from(error)))
    }

    async fn discard_source(
        &self,
        connection: &mut AsyncPgConnection,
        tenant_id: Uuid,
        source: IsolationTier,
    ) -> Result<(), Stop> {
        // The same as discarding a target: remove the tenant's copy on that tier.
        self.discard_target(connection, tenant_id, source).await
    }
}

impl OperationHandler for MoveHandler {
    fn kind(&self) -> OperationKind {
        OperationKind::MoveTenant
    }

    fn run<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<serde_json::Value, Stop>> {
        Box::pin(self.run_move(run))
    }

    fn abandon<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<(), Stop>> {
        Box::pin(async move {
            let request: MoveRequest = serde_json::from_value(run.operation.request.clone())
                .map_err(|error| Stop::Failed(Error::internal(error.into())))?;
            if matches!(run.operation.phase.as_str(), "drain" | "cleanup") {
                // After the cutover the tenant lives on the target: leave the source for an
                // operator rather than fail with two copies half-removed.
                return Ok(());
            }
            let mut connection = self.connect().await?;
            self.discard_target(&mut connection, request.tenant_id, request.target).await
        })
    }
}
