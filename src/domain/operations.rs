//! Long-running operations (AIP-151): work that outlives the RPC that started it, stored in
//! the `operations` table so that it survives a restart, and run by exactly one replica at a
//! time.
//!
//! An RPC that starts one inserts a pending row and returns it; every replica runs an
//! [`OperationWorker`], which claims the oldest unfinished operation whose lease is free or
//! expired (`FOR UPDATE SKIP LOCKED`), renews its lease every third of its length while the
//! kind's [`OperationHandler`] works, and records the outcome. A replica that crashes stops
//! renewing; once its lease expires any worker claims the operation again and the handler
//! resumes from the phase it recorded (handlers are written so that every phase can be
//! repeated). Every write a worker makes is conditional on still holding the lease.
//!
//! The kinds are a closed list ([`OperationKind`]); offboarding (export, purge) adds its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::idempotency::{self, RequestKey};
use super::page::{self, PageToken, fingerprint};
use crate::config::OperationsConfig;
use crate::db;
use crate::db::operations::{NewOperationRow, OperationRow, Outcome};
use crate::error::{Error, Reason, Result};
use crate::tenancy::{Actor, RequestContext, TenantContext, TenantDb};

/// An operation is failed with OPERATION_ATTEMPTS_EXHAUSTED after this many claims.
pub const MAX_ATTEMPTS: i32 = 20;

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// Moves a tenant between isolation tiers.
    MoveTenant,
    /// Writes a tenant's archive.
    ExportTenant,
    /// Recreates a tenant from an uploaded archive.
    ImportTenant,
    /// Purges a deleted tenant (decision 0020).
    PurgeTenant,
}

impl OperationKind {
    /// Every kind.
    pub const ALL: [OperationKind; 4] = [
        OperationKind::MoveTenant,
        OperationKind::PurgeTenant,
        OperationKind::ExportTenant,
        OperationKind::ImportTenant,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::MoveTenant => "move_tenant",
            OperationKind::ExportTenant => "export_tenant",
            OperationKind::ImportTenant => "import_tenant",
            OperationKind::PurgeTenant => "purge_tenant",
        }
    }

    /// The kind with a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    /// Not claimed yet.
    Pending,
    /// Claimed by a worker (or waiting for its expired lease to be claimed again).
    Running,
    /// Done, with a response.
    Succeeded,
    /// Done, with an error.
    Failed,
    /// Done: cancelled before it finished.
    Cancelled,
}

impl OperationState {
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(Error::internal(anyhow::anyhow!("unknown operation state {other:?}"))),
        })
    }

    /// Whether the operation has ended.
    pub fn done(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Why an operation ended without a response.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationError {
    /// The gRPC code.
    pub code: tonic::Code,
    /// The ErrorInfo reason.
    pub reason: String,
    /// The message for people.
    pub message: String,
}

/// A long-running operation, as callers see it.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Id; the resource name is `operations/{id}`.
    pub id: Uuid,
    /// What it does.
    pub kind: OperationKind,
    /// The tenant it acts on.
    pub tenant_id: Option<Uuid>,
    /// The request it was started with.
    pub request: serde_json::Value,
    /// Where it is.
    pub state: OperationState,
    /// The handler's current phase.
    pub phase: String,
    /// Progress, 0 to 100.
    pub progress_percent: i32,
    /// The handler's progress details.
    pub progress: serde_json::Value,
    /// Whether cancellation was asked for.
    pub cancel_requested: bool,
    /// The response of a succeeded operation.
    pub response: Option<serde_json::Value>,
    /// The error of a failed or cancelled one.
    pub error: Option<OperationError>,
    /// How many times a worker claimed it.
    pub attempts: i32,
    /// Who started it.
    pub created_by: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// When it ended.
    pub done_time: Option<DateTime<Utc>>,
}

impl TryFrom<OperationRow> for Operation {
    type Error = Error;

    fn try_from(row: OperationRow) -> Result<Self> {
        let kind = OperationKind::parse(&row.kind)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("unknown operation kind {:?}", row.kind)))?;
        let (response, error) = match row.result {
            None => (None, None),
            Some(result) => match serde_json::from_value::<Outcome>(result) {
                Ok(Outcome::Succeeded(response)) => (Some(response), None),
                Ok(Outcome::Error { code, reason, message, .. }) => {
                    (None, Some(OperationError { code: tonic::Code::from_i32(code), reason, message }))
                }
                Err(error) => return Err(Error::internal(anyhow::anyhow!("operation {} result: {error}", row.id))),
            },
        };
        let percent = row.progress.get("percent").and_then(serde_json::Value::as_i64).unwrap_or_default();
        let details = row.progress.get("details").cloned().unwrap_or_else(|| serde_json::json!({}));
        Ok(Self {
            id: row.id,
            kind,
            tenant_id: row.subject_tenant_id,
            request: row.request,
            state: OperationState::parse(&row.state)?,
            phase: row.phase,
            progress_percent: i32::try_from(percent.clamp(0, 100)).unwrap_or_default(),
            progress: details,
            cancel_requested: row.cancel_requested,
            response,
            error,
            attempts: row.attempts,
            created_by: row.created_by,
            create_time: row.create_time,
            update_time: row.update_time,
            done_time: row.done_time,
        })
    }
}

/// One page of operations.
#[derive(Debug, Clone)]
pub struct OperationPage {
    /// The operations, newest first.
    pub operations: Vec<Operation>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// What a caller may filter ListOperations by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationFilter {
    /// Only operations on this tenant.
    pub tenant_id: Option<Uuid>,
}

/// The control plane's calls on operations, and starting them.
#[derive(Clone)]
pub struct Operations {
    database: TenantDb,
    wake: Arc<Notify>,
}

/// The response stored for a keyed [`Operations::start_once`].
#[derive(Debug, Serialize, Deserialize)]
struct StartedOnce {
    /// The operation's tenant (named `id` as CreateTenant's response names it).
    id: Uuid,
    /// The operation started.
    operation_id: Uuid,
}

impl Operations {
    /// Operations stored through `database`; [`Operations::start`] wakes the worker that
    /// shares `wake`.
    pub fn new(database: TenantDb, wake: Arc<Notify>) -> Self {
        Self { database, wake }
    }

    /// Starts an operation: stores it pending and wakes this replica's worker. At most one
    /// unfinished operation acts on a tenant (FAILED_PRECONDITION
    /// TENANT_OPERATION_IN_PROGRESS otherwise).
    pub async fn start(
        &self,
        request: &RequestContext,
        kind: OperationKind,
        tenant_id: Option<Uuid>,
        body: serde_json::Value,
        phase: &str,
    ) -> Result<Operation> {
        let created_by = actor_label(request.actor())?;
        self.start_by(&created_by, kind, tenant_id, body, phase).await
    }

    /// Starts an operation on behalf of `created_by` (`retention` for the purge sweep, which
    /// has no request): as [`Operations::start`].
    pub async fn start_by(
        &self,
        created_by: &str,
        kind: OperationKind,
        tenant_id: Option<Uuid>,
        body: serde_json::Value,
        phase: &str,
    ) -> Result<Operation> {
        let row = self
            .database
            .global(async |connection| insert(connection, kind, tenant_id, body, phase, created_by).await)
            .await?;
        self.started(row, kind, created_by)
    }

    /// Starts an operation at most once per `key` (AIP-155), in `context`'s transaction: a
    /// retry with the same key and body returns the first operation (as it is now) and `true`
    /// (a replay, nothing started); the same key with another body is INVALID_ARGUMENT
    /// `REQUEST_ID_REUSED`. The record's response names the tenant as `id`, so a purge of the
    /// tenant removes it with CreateTenant's.
    pub async fn start_once(
        &self,
        context: &TenantContext,
        key: Option<RequestKey>,
        kind: OperationKind,
        body: serde_json::Value,
        phase: &str,
    ) -> Result<(Operation, bool)> {
        let created_by = actor_label(context.request().actor())?;
        let tenant_id = context.tenant_id();
        let started = self
            .database
            .run(context, async |transaction| {
                if let Some(replay) = idempotency::begin::<StartedOnce>(transaction, &key).await? {
                    return Ok(Err(replay.operation_id));
                }
                let row = insert(transaction.connection(), kind, Some(tenant_id), body, phase, &created_by).await?;
                idempotency::finish(transaction, &key, &StartedOnce { id: tenant_id, operation_id: row.id }).await?;
                Ok(Ok(row))
            })
            .await?;
        match started {
            Ok(row) => Ok((self.started(row, kind, &created_by)?, false)),
            Err(operation_id) => {
                tracing::info!(operation.id = %operation_id, operation.kind = kind.as_str(), "operation start replayed");
                Ok((self.get(operation_id).await?, true))
            }
        }
    }

    /// Wakes a worker for the operation just inserted as `row`, and logs it.
    fn started(&self, row: OperationRow, kind: OperationKind, created_by: &str) -> Result<Operation> {
        self.wake.notify_one();
        tracing::info!(operation.id = %row.id, operation.kind = kind.as_str(), created_by, "operation started");
        row.try_into()
    }

    /// Gets an operation.
    pub async fn get(&self, id: Uuid) -> Result<Operation> {
        let row = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::operations::find(connection, id).await?))
        })
        .await?;
        row.ok_or(Error::new(Reason::OperationNotFound))?.try_into()
    }

    /// Lists operations, newest first.
    pub async fn list(&self, filter: OperationFilter, page_size: i64, page_token: &str) -> Result<OperationPage> {
        let fingerprint = fingerprint(&format!("operations:{:?}", filter.tenant_id));
        let before = PageToken::decode(page_token, Uuid::nil(), fingerprint)?;
        let mut rows = db::retry::read(|| {
            self.database.global(async move |connection| {
                Ok(db::operations::list(connection, filter.tenant_id, before, page_size + 1).await?)
            })
        })
        .await?;
        let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, Uuid::nil(), fingerprint);
        let operations = rows.into_iter().map(Operation::try_from).collect::<Result<_>>()?;
        Ok(OperationPage { operations, next_page_token })
    }

    /// Asks an operation to stop (AIP-151: best effort). A pending one ends at once; a
    /// running one stops at its handler's next checkpoint if it can still be undone (a tenant
    /// move: before its cutover), and otherwise finishes. Cancelling a finished operation
    /// changes nothing.
    pub async fn cancel(&self, request: &RequestContext, id: Uuid) -> Result<Operation> {
        let reason = Reason::OperationCancelled;
        let row = self
            .database
            .global(async |connection| {
                Ok(db::operations::request_cancel(connection, id, reason.as_str(), reason.message()).await?)
            })
            .await?
            .ok_or(Error::new(Reason::OperationNotFound))?;
        tracing::info!(
            operation.id = %id, actor.kind = request.actor().kind(), actor.id = %request.actor().id(),
            "operation cancellation requested"
        );
        row.try_into()
    }

    /// Forgets a finished operation (FAILED_PRECONDITION OPERATION_NOT_DONE for an
    /// unfinished one).
    pub async fn delete(&self, request: &RequestContext, id: Uuid) -> Result<()> {
        let deleted =
            self.database.global(async |connection| Ok(db::operations::delete_finished(connection, id).await?)).await?;
        if !deleted {
            // Unknown (NOT_FOUND) or unfinished.
            self.get(id).await?;
            return Err(Error::new(Reason::OperationNotDone));
        }
        tracing::info!(
            operation.id = %id, actor.kind = request.actor().kind(), actor.id = %request.actor().id(),
            "operation deleted"
        );
        Ok(())
    }

    /// Waits until the operation is done or `timeout` passes, then returns its latest state.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<Operation> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let operation = self.get(id).await?;
            let now = tokio::time::Instant::now();
            if operation.state.done() || now >= deadline {
                return Ok(operation);
            }
            tokio::time::sleep(WAIT_POLL.min(deadline - now)).await;
        }
    }
}

/// How often WaitOperation looks at the operation again.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// How an operation row records who started it: `bootstrap` or `operator:<id>`.
fn actor_label(actor: &Actor) -> Result<String> {
    match actor {
        Actor::Bootstrap => Ok("bootstrap".to_owned()),
        Actor::Operator { operator_id, .. } => Ok(format!("operator:{operator_id}")),
        Actor::System | Actor::ApiKey { .. } => {
            Err(Error::internal(anyhow::anyhow!("operation started by a non-platform actor {actor:?}")))
        }
    }
}

/// Inserts a pending operation (in whatever transaction `connection` is in).
async fn insert(
    connection: &mut db::Connection<'_>,
    kind: OperationKind,
    tenant_id: Option<Uuid>,
    body: serde_json::Value,
    phase: &str,
    created_by: &str,
) -> Result<OperationRow> {
    let row = NewOperationRow {
        id: Uuid::now_v7(),
        kind: kind.as_str(),
        subject_tenant_id: tenant_id,
        request: body,
        phase,
        created_by,
    };
    db::operations::insert(connection, row).await.map_err(|error| crate::error::from_database(error, constraint_error))
}

/// What a violated constraint means when operations are written; `None` for a constraint
/// this module does not expect (INTERNAL).
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "operations_one_unfinished_per_tenant" => Some(Error::new(Reason::TenantOperationInProgress)),
        "operations_pkey" => Some(Error::already_exists(Reason::OperationAlreadyExists, "operation.name")),
        _ => None,
    }
}

/// Why a handler stopped without a response.
#[derive(Debug)]
pub enum Stop {
    /// Cancelled at a checkpoint; everything the handler did is undone.
    Cancelled,
    /// Failed for good with this error (its reason and message are what callers see).
    Failed(Error),
    /// Interrupted (a database outage, a lost lease, shutdown): another claim resumes it.
    Interrupted(Error),
}

impl From<Error> for Stop {
    /// An error from a step is an interruption: the step is repeated on the next claim.
    fn from(error: Error) -> Self {
        Stop::Interrupted(error)
    }
}

/// A claimed operation, as its handler sees it.
pub struct OperationRun {
    /// The operation as claimed (its phase and progress say where to resume).
    pub operation: Operation,
    owner: Uuid,
    database: TenantDb,
    lost: CancellationToken,
}

impl OperationRun {
    /// Records the phase and progress; returns whether cancellation was asked for. Fails
    /// with an interruption if this worker no longer holds the operation.
    pub async fn checkpoint(&self, phase: &str, percent: i32, progress: serde_json::Value) -> Result<bool, Stop> {
        let (id, owner) = (self.operation.id, self.owner);
        let recorded = self
            .database
            .global(async |connection| {
                let progress = serde_json::json!({"percent": percent.clamp(0, 100), "details": progress});
                Ok(db::operations::record_progress(connection, id, owner, phase, progress).await?)
            })
            .await?;
        match recorded {
            Some(cancel_requested) => Ok(cancel_requested),
            None => Err(Stop::Interrupted(lease_lost())),
        }
    }

    /// Completes when this worker lost the operation (a renewal found another owner or the
    /// worker is stopping): the handler must not make further changes.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// The worker's id (its lease owner).
    pub fn owner(&self) -> Uuid {
        self.owner
    }
}

fn lease_lost() -> Error {
    Error::internal(anyhow::anyhow!("the operation's lease was lost"))
}

/// Runs the operations of one kind.
pub trait OperationHandler: Send + Sync {
    /// The kind it runs.
    fn kind(&self) -> OperationKind;

    /// Runs (or resumes, from `run.operation.phase`) an operation; returns its response.
    fn run<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<serde_json::Value, Stop>>;

    /// Called once instead of [`OperationHandler::run`] when the operation was claimed
    /// [`MAX_ATTEMPTS`] times: undo what can be undone; the operation then fails.
    fn abandon<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<(), Stop>>;
}

/// A replica's operation worker.
pub struct OperationWorker {
    database: TenantDb,
    handlers: HashMap<&'static str, Arc<dyn OperationHandler>>,
    owner: Uuid,
    config: OperationsConfig,
    wake: Arc<Notify>,
}

impl OperationWorker {
    /// A worker with a fresh owner id that runs `handlers`, woken through `wake`.
    pub fn new(
        database: TenantDb,
        config: OperationsConfig,
        wake: Arc<Notify>,
        handlers: Vec<Arc<dyn OperationHandler>>,
    ) -> Self {
        let handlers = handlers.into_iter().map(|handler| (handler.kind().as_str(), handler)).collect();
        Self { database, handlers, owner: Uuid::now_v7(), config, wake }
    }

    /// Claims and runs operations, one at a time, until `stop`. An operation running when
    /// `stop` fires is left with its lease released, so the next claim resumes it at once.
    pub async fn run(self, stop: CancellationToken) {
        let kinds: Vec<&'static str> = self.handlers.keys().copied().collect();
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        while !stop.is_cancelled() {
            let (database, owner) = (self.database.clone(), self.owner);
            let claimed = database
                .global(async |connection| Ok(db::operations::claim(connection, owner, &kinds, lease_ms).await?))
                .await;
            match claimed {
                Ok(Some(row)) => {
                    self.run_one(row, lease_ms, &stop).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(error = %error, "operation worker: claim failed"),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    async fn run_one(&self, row: OperationRow, lease_ms: i64, stop: &CancellationToken) {
        let id = row.id;
        let Some(handler) = self.handlers.get(row.kind.as_str()).cloned() else { return };
        let operation = match Operation::try_from(row) {
            Ok(operation) => operation,
            Err(error) => {
                tracing::error!(operation.id = %id, error = %error, "operation worker: unreadable operation");
                return;
            }
        };
        let attempts = operation.attempts;
        let run =
            OperationRun { operation, owner: self.owner, database: self.database.clone(), lost: stop.child_token() };
        tracing::info!(operation.id = %id, phase = %run.operation.phase, attempts, "operation claimed");
        let work = async {
            if attempts > MAX_ATTEMPTS {
                handler.abandon(&run).await?;
                return Err(Stop::Failed(Error::new(Reason::OperationAttemptsExhausted)));
            }
            handler.run(&run).await
        };
        // The renewals run beside the work, in this task: if the worker is dropped (its
        // replica killed), they stop with it and the lease expires.
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = self.renew_until_lost(id, lease_ms) => Err(Stop::Interrupted(lease_lost())),
            () = run.lost.cancelled() => Err(Stop::Interrupted(lease_lost())),
        };
        run.lost.cancel();
        let outcome = match outcome {
            Ok(response) => Outcome::Succeeded(response),
            Err(Stop::Cancelled) => ended("cancelled", Error::new(Reason::OperationCancelled)),
            Err(Stop::Failed(error)) => ended("failed", error),
            Err(Stop::Interrupted(error)) => {
                tracing::warn!(operation.id = %id, error = ?error, "operation interrupted; it resumes on its next claim");
                self.release(id).await;
                return;
            }
        };
        let owner = self.owner;
        let finished = self
            .database
            .global(async |connection| Ok(db::operations::finish(connection, id, owner, outcome).await?))
            .await;
        match finished {
            Ok(true) => tracing::info!(operation.id = %id, "operation finished"),
            Ok(false) => tracing::warn!(operation.id = %id, "operation finished after its lease was lost"),
            Err(error) => tracing::warn!(operation.id = %id, error = %error, "operation outcome not recorded"),
        }
    }

    /// Renews the lease every third of it; completes only when a renewal finds that another
    /// worker holds the operation (or it ended).
    async fn renew_until_lost(&self, id: Uuid, lease_ms: i64) {
        let (database, owner) = (self.database.clone(), self.owner);
        let every = self.config.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let renewed = database
                .global(async |connection| Ok(db::operations::renew(connection, id, owner, lease_ms).await?))
                .await;
            match renewed {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!(operation.id = %id, "operation lease lost");
                    return;
                }
                // The lease may still be ours: try again at the next tick.
                Err(error) => tracing::warn!(operation.id = %id, error = %error, "operation lease not renewed"),
            }
        }
    }

    /// Gives up the lease now, so that the next claim (here or elsewhere) resumes at once.
    async fn release(&self, id: Uuid) {
        let owner = self.owner;
        let _ =
            self.database.global(async |connection| Ok(db::operations::renew(connection, id, owner, 0).await?)).await;
    }
}

fn ended(state: &'static str, error: Error) -> Outcome {
    Outcome::Error {
        state,
        code: error.code() as i32,
        reason: error.reason().as_str().to_owned(),
        message: error.reason().message().to_owned(),
    }
}
