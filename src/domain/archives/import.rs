//! The `import_tenant` operation: applying a verified upload in short transactions
//! (decision 0021, "Batched, resumable imports").
//!
//! The operation's phase says where it is; each step records the next phase *in its own
//! transaction*, so a crash anywhere resumes exactly where the last commit left it:
//!
//! | phase    | what the step does, in one transaction per step                                  |
//! |----------|----------------------------------------------------------------------------------|
//! | `import` | the **claim**: the registry row PROVISIONING (or a PURGED tombstone taken), the schema on the schema tier, the manifest's columns checked, the domains and channel bindings; then `rows` |
//! | `rows`   | a **batch** of data lines per transaction, with the count of lines in (`rows`) and per table (`counts`), so a resumed run skips exactly those |
//! | `rows`   | the **final** transaction, begun at the first audit event line: the audit history, the whole upload verified, every table's count checked, quota counters, ACTIVE, `tenant.import` and `tenant.provision`, the upload deleted; then `done` with the response |
//! | `done`   | answers with the recorded response (a crash after the final commit)               |
//! | `undo`   | a failed or cancelled import deletes what it wrote (the purge's batches), drops the schema, puts the registry back (no row, or the tombstone), deletes the upload |
//!
//! While it runs the tenant is PROVISIONING: visible on the control plane, refused on the
//! data plane. No transaction lasts longer than a batch, except the final one, so the event
//! stream (delivered below the oldest running writer, decision 0015) is held back for a
//! batch at a time, not for the whole import. The audit history is written by the final
//! transaction, so watchers see it once, with the tenant becoming ACTIVE, and never the
//! history of an import that failed.

use std::collections::{BTreeMap, VecDeque};

use diesel_async::AsyncPgConnection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::format::{ArchiveLine, Manifest, Verifier};
use super::{ArchiveHandler, ImportRequest, parse_request};
use crate::db;
use crate::db::archives::{ARCHIVED_TABLES, ImportActor, ImportedTenant, Tombstone, UNRESTORED_COLUMNS};
use crate::db::tenant_schema::IsolationTier;
use crate::domain::operations::{OperationRun, Stop};
use crate::error::{Error, Reason};
use crate::tenancy::{RequestContext, TenantContext, TenantState, Transition};

/// Rows inserted per statement of an import (fewer if their text passes [`BATCH_BYTES`]).
const BATCH_ROWS: usize = 500;
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The table whose rows the final transaction writes (the last of [`ARCHIVED_TABLES`]).
const HISTORY_TABLE: &str = "audit_events";
/// Rows deleted per transaction when a failed import is undone.
const UNDO_BATCH_ROWS: i64 = 1000;

/// Where an import is, as its operation's progress records it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Progress {
    /// The PURGED tombstone the import took (`None`: a new tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tombstone: Option<Tombstone>,
    /// Data lines committed (a resumed run skips this many).
    #[serde(default)]
    rows: u64,
    /// Rows committed per table.
    #[serde(default)]
    counts: BTreeMap<String, u64>,
    /// The response (phase `done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<serde_json::Value>,
    /// The reason of the failure being undone (phase `undo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

impl ArchiveHandler {
    /// Runs (or resumes) an import.
    pub(super) async fn import(&self, run: &OperationRun) -> Result<serde_json::Value, Stop> {
        let request: ImportRequest = parse_request(run)?;
        let mut progress: Progress = serde_json::from_value(run.operation.progress.clone()).unwrap_or_default();
        match run.operation.phase.as_str() {
            "done" => return progress.response.ok_or_else(|| Stop::Failed(lost_response())),
            "undo" => {
                self.undo(run, &request, &progress).await?;
                let reason = progress.failure.as_deref().and_then(reason_named).unwrap_or(Reason::Internal);
                return Err(Stop::Failed(Error::new(reason)));
            }
            _ => {}
        }
        let claimed = run.operation.phase == "rows";
        let outcome = self.apply(run, &request, &mut progress, claimed).await;
        match outcome {
            Ok(response) => {
                self.resolver.invalidate(request.tenant_id, None).await;
                self.database.events_committed(request.tenant_id);
                tracing::info!(tenant.id = %request.tenant_id, "tenant imported");
                Ok(response)
            }
            Err(Applied { stop, claimed }) => {
                // An interrupted import resumes from its last commit; a failed or cancelled
                // one removes what it wrote and its upload.
                if matches!(stop, Stop::Failed(_) | Stop::Cancelled) {
                    if claimed {
                        progress.failure = match &stop {
                            Stop::Failed(error) => Some(error.reason().as_str().to_owned()),
                            _ => Some(Reason::OperationCancelled.as_str().to_owned()),
                        };
                        run.checkpoint("undo", 100, to_value(&progress)).await?;
                        self.undo(run, &request, &progress).await?;
                    } else {
                        self.delete_chunks(request.tenant_id, request.upload_id).await?;
                    }
                }
                Err(stop)
            }
        }
    }

    /// The claim (unless `claimed` already), the batches and the final transaction.
    async fn apply(
        &self,
        run: &OperationRun,
        request: &ImportRequest,
        progress: &mut Progress,
        mut claimed: bool,
    ) -> Result<serde_json::Value, Applied> {
        let stop = |claimed: bool| move |stop: Stop| Applied { stop, claimed };
        let mut connection = self.connect().await.map_err(stop(claimed))?;
        let mut upload = Upload::new(self, request);
        let manifest = upload.manifest().await.map_err(stop(claimed))?;
        // The claim checks the manifest's columns against the catalog in its transaction; a
        // resumed run checks them again in a transaction of its own.
        let columns = if claimed {
            in_transaction(&mut connection, request.tenant_id, async |connection| {
                restored_columns(connection, &manifest).await
            })
            .await
            .map_err(stop(true))?
        } else {
            if run.checkpoint("import", 1, serde_json::json!({})).await.map_err(stop(false))? {
                return Err(stop(false)(Stop::Cancelled));
            }
            let (tombstone, columns) =
                self.claim(&mut connection, run, request, &manifest).await.map_err(stop(false))?;
            progress.tombstone = tombstone;
            claimed = true;
            columns
        };
        let history = ARCHIVED_TABLES.iter().position(|table| *table == HISTORY_TABLE);
        let mut batch = Batch::default();
        let mut seen = 0u64;
        let mut first_history_row = None;
        while let Some((table, row)) = upload.next_row().await.map_err(stop(claimed))? {
            seen += 1;
            if seen <= progress.rows {
                continue;
            }
            if Some(table) == history {
                first_history_row = Some((table, row));
                break;
            }
            if batch.table != Some(table) || batch.full() {
                self.commit_batch(&mut connection, run, request, &columns, &mut batch, progress, &upload)
                    .await
                    .map_err(stop(claimed))?;
            }
            batch.push(table, row);
        }
        self.commit_batch(&mut connection, run, request, &columns, &mut batch, progress, &upload)
            .await
            .map_err(stop(claimed))?;
        db::archives::begin_import(&mut connection, request.tenant_id)
            .await
            .map_err(|error| stop(claimed)(classify(error)))?;
        let outcome = self.finish(&mut connection, run, request, &columns, upload, first_history_row, progress).await;
        settle(&mut connection, outcome).await.map_err(stop(claimed))
    }

    /// The claim's transaction; returns the PURGED tombstone it took, if it took one, and the
    /// columns the import writes per table.
    async fn claim(
        &self,
        connection: &mut AsyncPgConnection,
        run: &OperationRun,
        request: &ImportRequest,
        manifest: &Manifest,
    ) -> Result<(Option<Tombstone>, Vec<Vec<String>>), Stop> {
        let tenant_id = request.tenant_id;
        in_transaction(connection, tenant_id, async |connection| {
            let state = db::archives::lock_state(connection, tenant_id).await?;
            let tombstone = match state.as_deref().map(TenantState::parse) {
                None => None,
                Some(Some(TenantState::Purged)) => db::archives::tombstone(connection, tenant_id).await?,
                Some(_) => {
                    return Err(failed(Error::already_exists(Reason::TenantAlreadyExists, "options.tenant_id")));
                }
            };
            let restore = tombstone.is_some();
            let initial = if restore {
                TenantState::Purged.after(Transition::Restore).map_err(|reason| failed(Error::new(reason)))?
            } else {
                TenantState::Provisioning
            };
            let tenant = &manifest.tenant;
            let text = |key: &str| tenant[key].as_str().unwrap_or_default().to_owned();
            let (display_name, create_time) = (text("display_name"), text("create_time"));
            let row = ImportedTenant {
                id: tenant_id,
                slug: &request.slug,
                display_name: &display_name,
                labels: &tenant["labels"],
                tier: request.isolation_tier,
                plan: tenant["plan"].as_str(),
                limit_overrides: &tenant["limit_overrides"],
                create_time: &create_time,
                state: initial.as_str(),
            };
            db::archives::write_tenant(connection, &row).await?;
            if request.isolation_tier == IsolationTier::Schema {
                db::archives::provision_schema(connection, tenant_id).await?;
            }
            let columns = restored_columns(connection, manifest).await?;
            let bindings: Vec<(String, String)> = manifest
                .channel_bindings
                .iter()
                .map(|binding| (binding.channel_type.clone(), binding.external_id.clone()))
                .collect();
            db::archives::write_identifiers(connection, tenant_id, &manifest.domains, &bindings).await?;
            let progress = Progress { tombstone: tombstone.clone(), ..Progress::default() };
            record(connection, run, "rows", 5, &progress).await?;
            Ok((tombstone, columns))
        })
        .await
    }

    /// Inserts `batch` and records it in one transaction, then empties it.
    #[allow(clippy::too_many_arguments)]
    async fn commit_batch(
        &self,
        connection: &mut AsyncPgConnection,
        run: &OperationRun,
        request: &ImportRequest,
        columns: &[Vec<String>],
        batch: &mut Batch,
        progress: &mut Progress,
        upload: &Upload<'_>,
    ) -> Result<(), Stop> {
        let Some(table) = batch.table.filter(|_| !batch.rows.is_empty()) else { return Ok(()) };
        let mut next = progress.clone();
        next.rows += batch.rows.len() as u64;
        let cancelled = in_transaction(connection, request.tenant_id, async |connection| {
            let inserted = batch.insert(connection, request, columns).await?;
            *next.counts.entry(ARCHIVED_TABLES[table].to_owned()).or_default() += inserted;
            record(connection, run, "rows", upload.percent(), &next).await
        })
        .await?;
        *progress = next;
        batch.clear();
        if cancelled { Err(Stop::Cancelled) } else { Ok(()) }
    }

    /// The final transaction's statements (begun by the caller, who commits it): the audit
    /// history from `first` on, the upload's end verified, the counts, ACTIVE, the events.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        connection: &mut AsyncPgConnection,
        run: &OperationRun,
        request: &ImportRequest,
        columns: &[Vec<String>],
        mut upload: Upload<'_>,
        first: Option<(usize, String)>,
        progress: &Progress,
    ) -> Result<serde_json::Value, Failure> {
        let tenant_id = request.tenant_id;
        let state = db::archives::lock_state(connection, tenant_id).await?.as_deref().and_then(TenantState::parse);
        let initial = match state {
            Some(TenantState::Provisioning) => TenantState::Provisioning,
            // Deleted while it was imported: the operator's delete stands, and the rows
            // written so far go with the tenant's purge.
            Some(other) => {
                let reason = other.after(Transition::Activate).err().unwrap_or(Reason::TenantAlreadyExists);
                return Err(failed(Error::new(reason)));
            }
            None => return Err(failed(Error::new(Reason::TenantNotFound))),
        };
        let mut counts = progress.counts.clone();
        let mut batch = Batch::default();
        if let Some((table, row)) = first {
            batch.push(table, row);
        }
        while let Some((table, row)) = upload.next_row().await? {
            if batch.table != Some(table) || batch.full() {
                let name = batch.table.map(|table| ARCHIVED_TABLES[table].to_owned());
                let inserted = batch.insert(connection, request, columns).await?;
                *counts.entry(name.unwrap_or_default()).or_default() += inserted;
                batch.clear();
            }
            batch.push(table, row);
        }
        let name = batch.table.map(|table| ARCHIVED_TABLES[table].to_owned());
        *counts.entry(name.unwrap_or_default()).or_default() += batch.insert(connection, request, columns).await?;
        let manifest = upload.finish()?;
        for (index, table) in manifest.tables.iter().enumerate() {
            let written = counts.get(&table.name).copied().unwrap_or_default();
            if written != table.rows {
                return Err(failed(Error::invalid(
                    Reason::ArchiveInvalid,
                    format!("archive.tables[{index}]"),
                    format!("{} rows of {} were written, the manifest says {}", written, table.name, table.rows),
                )));
            }
        }
        db::archives::recount_quotas(connection, tenant_id, request.isolation_tier).await?;
        let active = initial.after(Transition::Activate).map_err(|reason| failed(Error::new(reason)))?;
        db::archives::set_state(connection, tenant_id, active.as_str()).await?;
        let (actor_type, actor_id) = match run.operation.created_by.split_once(':') {
            Some((kind, id)) => (kind.to_owned(), id.to_owned()),
            None => (run.operation.created_by.clone(), String::new()),
        };
        let operation_name = format!("operations/{}", run.operation.id);
        let actor = ImportActor { actor_type: &actor_type, actor_id: &actor_id, request_id: &operation_name };
        let rows: serde_json::Map<String, serde_json::Value> =
            manifest.tables.iter().map(|table| (table.name.clone(), table.rows.into())).collect();
        let details = serde_json::json!({
            "source_tenant_id": manifest.tenant_id,
            "export_time": manifest.export_time,
            "restored": progress.tombstone.is_some(),
            "rows": rows,
            "isolation_tier": request.isolation_tier.as_str(),
        });
        db::archives::record_event(connection, tenant_id, &actor, "tenant.import", &details).await?;
        let transition = serde_json::json!({"from": initial.as_str(), "to": active.as_str()});
        db::archives::record_event(connection, tenant_id, &actor, Transition::Activate.action(), &transition).await?;
        db::archives::delete_upload(connection, tenant_id, request.upload_id).await?;
        let response = serde_json::json!({
            "tenant_id": tenant_id,
            "rows": counts.values().sum::<u64>(),
            "restored": progress.tombstone.is_some(),
            "isolation_tier": request.isolation_tier.as_str(),
        });
        let done = Progress { response: Some(response.clone()), counts, ..progress.clone() };
        record(connection, run, "done", 100, &done).await?;
        Ok(response)
    }

    /// Removes what a failed or cancelled import wrote (every row of the tenant but its
    /// audit events, which only the final transaction writes: a restored tombstone keeps its
    /// `tenant.purge` event), its schema, its registry row (or the tombstone back as it was)
    /// and its upload. Repeatable: a crash in the middle resumes it (phase `undo`).
    async fn undo(&self, run: &OperationRun, request: &ImportRequest, progress: &Progress) -> Result<(), Stop> {
        let tenant_id = request.tenant_id;
        let database = |error| Stop::Interrupted(Error::from(error));
        let mut connection = self.connect().await?;
        let tables = db::purge::tables_to_delete(&mut connection).await.map_err(database)?;
        let mut removed = 0;
        for table in
            tables.iter().filter(|table| !["audit_events", "event_transactions"].contains(&table.name.as_str()))
        {
            let key = db::purge::key_columns(&mut connection, table).await.map_err(database)?;
            let mut after = None;
            loop {
                if run.lost().is_cancelled() {
                    return Err(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost"))));
                }
                let batch =
                    db::purge::delete_batch(&mut connection, tenant_id, table, &key, after.as_ref(), UNDO_BATCH_ROWS)
                        .await
                        .map_err(database)?;
                removed += batch.deleted;
                match batch.last {
                    Some(last) if batch.deleted as i64 >= UNDO_BATCH_ROWS => after = Some(last),
                    _ => break,
                }
            }
        }
        db::tenant_schema::drop_schema(&mut connection, tenant_id).await.map_err(database)?;
        let reverted = in_transaction(&mut connection, tenant_id, async |connection| {
            Ok(db::archives::revert(connection, tenant_id, progress.tombstone.as_ref()).await?)
        })
        .await?;
        self.resolver.invalidate(tenant_id, None).await;
        tracing::info!(tenant.id = %tenant_id, rows = removed, reverted, "failed tenant import undone");
        Ok(())
    }

    /// After [`crate::domain::operations::MAX_ATTEMPTS`] claims: an import that claimed its
    /// tenant is undone; one that did not only deletes its upload; a finished one stays.
    pub(super) async fn abandon_import(&self, run: &OperationRun) -> Result<(), Stop> {
        let request: ImportRequest = parse_request(run)?;
        match run.operation.phase.as_str() {
            "done" => Ok(()),
            "rows" | "undo" => {
                let progress: Progress = serde_json::from_value(run.operation.progress.clone()).unwrap_or_default();
                self.undo(run, &request, &progress).await
            }
            _ => self.delete_chunks(request.tenant_id, request.upload_id).await,
        }
    }
}

/// The stop of [`ArchiveHandler::apply`], and whether the tenant was claimed by then.
struct Applied {
    stop: Stop,
    claimed: bool,
}

/// The uploaded archive, read chunk by chunk (each through the app role's tenant
/// transaction) and verified again as it is read: it was stored by this server, but the
/// check is cheap and catches a change in between.
struct Upload<'h> {
    handler: &'h ArchiveHandler,
    context: TenantContext,
    upload_id: Uuid,
    chunks: i32,
    next_sequence: i32,
    verifier: Verifier,
    lines: VecDeque<ArchiveLine>,
}

impl<'h> Upload<'h> {
    fn new(handler: &'h ArchiveHandler, request: &ImportRequest) -> Self {
        Self {
            handler,
            context: TenantContext::new(request.tenant_id, RequestContext::system()),
            upload_id: request.upload_id,
            chunks: request.upload_chunks,
            next_sequence: 0,
            verifier: Verifier::new(ARCHIVED_TABLES, &handler.signing_keys),
            lines: VecDeque::new(),
        }
    }

    /// The next line (`None` after the last chunk).
    async fn next_line(&mut self) -> Result<Option<ArchiveLine>, Stop> {
        while self.lines.is_empty() {
            if self.next_sequence >= self.chunks {
                return Ok(None);
            }
            let (upload_id, sequence) = (self.upload_id, self.next_sequence);
            let bytes = self
                .handler
                .database
                .read(&self.context, async move |on| Ok(db::archives::chunk(on, upload_id, sequence).await?))
                .await?
                .ok_or_else(|| {
                    Stop::Failed(Error::invalid(Reason::ArchiveInvalid, "archive", "the upload is incomplete"))
                })?;
            self.lines.extend(self.verifier.push(&bytes).map_err(Stop::Failed)?);
            self.next_sequence += 1;
        }
        Ok(self.lines.pop_front())
    }

    /// The manifest (the first line).
    async fn manifest(&mut self) -> Result<Manifest, Stop> {
        match self.next_line().await? {
            Some(ArchiveLine::Manifest(manifest)) => Ok(*manifest),
            _ => Err(Stop::Failed(Error::invalid(Reason::ArchiveInvalid, "archive.manifest", "is missing"))),
        }
    }

    /// The next data line, as its table's index and its row's text.
    async fn next_row(&mut self) -> Result<Option<(usize, String)>, Stop> {
        match self.next_line().await? {
            Some(ArchiveLine::Row { table, row }) => Ok(Some((table, row))),
            Some(ArchiveLine::Manifest(_)) => {
                Err(Stop::Failed(Error::invalid(Reason::ArchiveInvalid, "archive", "has a second manifest")))
            }
            None => Ok(None),
        }
    }

    /// How far the reading is, in percent (between the claim's 5 and the end's 100).
    fn percent(&self) -> i32 {
        5 + (90 * self.next_sequence) / self.chunks.max(1)
    }

    /// The verified manifest, once every line was read.
    fn finish(self) -> Result<Manifest, Stop> {
        self.verifier.finish().map_err(Stop::Failed)
    }
}

/// Rows of one table waiting to be inserted.
#[derive(Default)]
struct Batch {
    table: Option<usize>,
    rows: Vec<String>,
    bytes: usize,
}

impl Batch {
    fn full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    fn push(&mut self, table: usize, row: String) {
        self.table = Some(table);
        self.bytes += row.len();
        self.rows.push(row);
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
    }

    /// Inserts the batch inside the open transaction; returns how many rows it inserted.
    async fn insert(
        &self,
        connection: &mut AsyncPgConnection,
        request: &ImportRequest,
        columns: &[Vec<String>],
    ) -> Result<u64, Failure> {
        let Some(table) = self.table.filter(|_| !self.rows.is_empty()) else { return Ok(0) };
        let rows = format!("[{}]", self.rows.join(","));
        let inserted = db::archives::insert_rows(
            connection,
            request.tenant_id,
            request.isolation_tier,
            ARCHIVED_TABLES[table],
            &columns[table],
            &rows,
        )
        .await?;
        Ok(inserted as u64)
    }
}

/// The columns an import writes per archived table (those of the catalog but
/// [`UNRESTORED_COLUMNS`]), once the manifest's columns are found to be the catalog's (else
/// `ARCHIVE_INVALID`: an archive of another schema version).
async fn restored_columns(
    connection: &mut AsyncPgConnection,
    manifest: &Manifest,
) -> Result<Vec<Vec<String>>, Failure> {
    let mut restored = Vec::with_capacity(manifest.tables.len());
    for (index, table) in manifest.tables.iter().enumerate() {
        let catalog = db::archives::columns(connection, &table.name).await?;
        let matches = catalog.len() == table.columns.len()
            && catalog
                .iter()
                .zip(&table.columns)
                .all(|(column, archived)| column.name == archived.name && column.sql_type == archived.sql_type);
        if !matches {
            return Err(failed(Error::invalid(
                Reason::ArchiveInvalid,
                format!("archive.manifest.tables[{index}].columns"),
                format!("do not match the columns of {} in this database", table.name),
            )));
        }
        restored.push(
            catalog
                .into_iter()
                .map(|column| column.name)
                .filter(|column| !UNRESTORED_COLUMNS.contains(&(table.name.as_str(), column.as_str())))
                .collect(),
        );
    }
    Ok(restored)
}

/// Records the operation's phase and progress inside the open transaction, so they commit
/// with what they describe; returns whether cancellation was asked for. A lost lease rolls
/// the transaction back (another worker holds the operation).
async fn record(
    connection: &mut AsyncPgConnection,
    run: &OperationRun,
    phase: &str,
    percent: i32,
    progress: &Progress,
) -> Result<bool, Failure> {
    let progress = serde_json::json!({"percent": percent.clamp(0, 100), "details": to_value(progress)});
    let recorded =
        db::operations::record_progress(&mut &*connection, run.operation.id, run.owner(), phase, progress).await?;
    recorded.ok_or_else(|| Failure::Stop(Stop::Interrupted(Error::internal(anyhow::anyhow!("lease lost")))))
}

fn to_value(progress: &Progress) -> serde_json::Value {
    serde_json::to_value(progress).unwrap_or_default()
}

/// Runs `work` in one import transaction on `connection`: committed after success, rolled
/// back after a failure.
async fn in_transaction<T>(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> Result<T, Failure>,
) -> Result<T, Stop> {
    db::archives::begin_import(connection, tenant_id).await.map_err(classify)?;
    let outcome = work(connection).await;
    settle(connection, outcome).await
}

/// Commits the open transaction after `outcome` succeeded, rolls it back otherwise.
async fn settle<T>(connection: &mut AsyncPgConnection, outcome: Result<T, Failure>) -> Result<T, Stop> {
    match outcome {
        Ok(value) => db::archives::end(connection, Ok(value)).await.map_err(classify),
        Err(failure) => {
            db::archives::rollback(connection).await;
            Err(match failure {
                Failure::Stop(stop) => stop,
                Failure::Database(error) => classify(error),
            })
        }
    }
}

/// Why an import's transaction stopped: a database error (classified once it is rolled
/// back) or a decision.
enum Failure {
    Database(diesel::result::Error),
    Stop(Stop),
}

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        Failure::Database(error)
    }
}

impl From<Stop> for Failure {
    fn from(stop: Stop) -> Self {
        Failure::Stop(stop)
    }
}

fn failed(error: Error) -> Failure {
    Failure::Stop(Stop::Failed(error))
}

/// A database error of an import: a taken identifier or slug fails the import (ALREADY_EXISTS,
/// naming it); an outage interrupts it (it resumes); anything else fails it.
fn classify(error: diesel::result::Error) -> Stop {
    let error = crate::error::from_database(error, crate::domain::tenants::constraint_error);
    match error.code() {
        tonic::Code::Unavailable => Stop::Interrupted(error),
        _ => Stop::Failed(error),
    }
}

/// The reason a failure recorded before its undo had.
fn reason_named(text: &str) -> Option<Reason> {
    Reason::ALL.iter().copied().find(|reason| reason.as_str() == text)
}

fn lost_response() -> Error {
    Error::internal(anyhow::anyhow!("an import recorded as done has no response"))
}
