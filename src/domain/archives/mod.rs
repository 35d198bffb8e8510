//! Tenant archives (issue 14, decision 0021): exporting a tenant (the `export_tenant`
//! long-running operation, then a streaming download) and recreating one from an archive
//! (a verified upload, then the `import_tenant` operation).
//!
//! Export: one `REPEATABLE READ, READ ONLY` snapshot of the tenant, every archived table read
//! in pages of [`PAGE_ROWS`] rows, written as chunks of at most 1 MiB while it is read (data
//! chunks from sequence 1; the manifest, known only at the end, as chunk 0, so a download
//! starts with it). Memory stays bounded by a page and a chunk. A repeated run starts over.
//!
//! Import: the upload is stored chunk by chunk while [`format::Verifier`] checks it; an
//! archive that does not verify is refused and its chunks deleted. The operation then applies
//! it in short transactions while the tenant is PROVISIONING (refused on the data plane), and
//! makes it ACTIVE in a final one; a crash resumes at the last commit, and a failure or a
//! cancel removes everything it wrote (see `import.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::format::{ColumnManifest, Digester, Manifest, TableManifest, Verifier, row_line};
use super::idempotency::{self, RequestKey, Scope};
use super::operations::{Operation, OperationHandler, OperationKind, OperationRun, OperationState, Operations, Stop};
use super::tenants::ChannelBinding;
use crate::db;
use crate::db::archives::{ARCHIVED_TABLES, MAX_CHUNK_BYTES};
use crate::db::tenant_schema::{IsolationTier, Provisioner};
use crate::error::{Error, Reason, Result};
use crate::tenancy::resolver::TenantResolver;
use crate::tenancy::selector::Slug;
use crate::tenancy::{RequestContext, TenantContext, TenantDb, TenantState};

pub mod format;
mod import;

/// The most rows read per page of an export; a page holds about [`PAGE_BYTES`] of rows
/// (the row count adapts to the rows' size), so memory does not grow with large rows.
pub const PAGE_ROWS: i64 = 1000;
/// About how many bytes of row text a page of an export holds.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Rows of the first page of each table.
const FIRST_PAGE_ROWS: i64 = 64;
/// How often expired archives are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How far back, past their retention, expired exports are looked at.
const SWEEP_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The request of an export, as stored on its operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportRequest {
    /// The tenant.
    pub tenant_id: Uuid,
}

/// The request of an import, as stored on its operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The tenant created (or restored).
    pub tenant_id: Uuid,
    /// The verified upload.
    pub upload_id: Uuid,
    /// Its chunks.
    pub upload_chunks: i32,
    /// Its slug.
    pub slug: String,
    /// Its tier.
    pub isolation_tier: IsolationTier,
}

/// How an import recreates the tenant.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The id (`None`: a new one).
    pub tenant_id: Option<Uuid>,
    /// The slug (`None`: the archive's).
    pub slug: Option<Slug>,
    /// The tier (`None`: the archive's).
    pub isolation_tier: Option<IsolationTier>,
    /// The idempotency key (AIP-155; `None`: none): a retry with the same key and archive
    /// returns the first import's operation and imports nothing more.
    pub request_id: Option<Uuid>,
}

/// What a keyed import's request id stands for: its options and its archive (the manifest
/// carries the hashes of every data line, verified against the upload).
#[derive(Serialize)]
struct ImportFingerprint<'a> {
    tenant_id: Option<Uuid>,
    slug: Option<&'a str>,
    isolation_tier: Option<IsolationTier>,
    manifest: &'a Manifest,
}

/// The method name of an import's idempotency records.
const IMPORT_METHOD: &str = "ImportTenant";

/// An export's archive, ready to download.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveHandle {
    tenant_id: Uuid,
    archive_id: Uuid,
    /// Its length.
    pub total_bytes: i64,
}

/// Exports, downloads and imports (the ExportTenant, ReadTenantArchive and ImportTenant RPCs).
#[derive(Clone)]
pub struct Archives {
    operations: Operations,
    database: TenantDb,
    provisioner: Provisioner,
    resolver: Arc<TenantResolver>,
    retention: Duration,
}

impl Archives {
    /// Archives kept for `retention` after their export (read as the app role), applied
    /// (imported) through `provisioner`'s role.
    pub fn new(
        operations: Operations,
        database: TenantDb,
        provisioner: Provisioner,
        resolver: Arc<TenantResolver>,
        retention: Duration,
    ) -> Self {
        Self { operations, database, provisioner, resolver, retention }
    }

    /// Starts exporting a tenant that is not PURGING or PURGED.
    pub async fn export(&self, request: &RequestContext, tenant_id: Uuid) -> Result<Operation> {
        self.resolver.invalidate(tenant_id, None).await;
        match self.resolver.state(tenant_id).await? {
            None => return Err(Error::new(Reason::TenantNotFound)),
            Some(TenantState::Purging) => return Err(Error::new(Reason::TenantPurging)),
            Some(TenantState::Purged) => return Err(Error::new(Reason::TenantPurged)),
            Some(_) => {}
        }
        let body = serde_json::to_value(ExportRequest { tenant_id }).map_err(|error| Error::internal(error.into()))?;
        self.operations.start(request, OperationKind::ExportTenant, Some(tenant_id), body, "export").await
    }

    /// The archive of the export `operation_id`: NOT_FOUND `ARCHIVE_NOT_FOUND` unless it is a
    /// succeeded export within its retention, FAILED_PRECONDITION `ARCHIVE_NOT_READY` while it
    /// runs.
    pub async fn open(&self, operation_id: Uuid) -> Result<ArchiveHandle> {
        let not_found = || Error::new(Reason::ArchiveNotFound);
        let operation = match self.operations.get(operation_id).await {
            Err(error) if error.reason() == Reason::OperationNotFound => return Err(not_found()),
            other => other?,
        };
        let Some(tenant_id) = operation.tenant_id.filter(|_| operation.kind == OperationKind::ExportTenant) else {
            return Err(not_found());
        };
        if !operation.state.done() {
            return Err(Error::new(Reason::ArchiveNotReady));
        }
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let expired = operation
            .done_time
            .is_none_or(|done| done.checked_add_signed(retention).is_some_and(|end| end < Utc::now()));
        if operation.state != OperationState::Succeeded || expired {
            return Err(not_found());
        }
        let context = TenantContext::new(tenant_id, RequestContext::system());
        let total = self
            .database
            .read(&context, async |on| Ok(db::archives::archive_bytes(on, operation_id).await?))
            .await?
            .ok_or_else(not_found)?;
        Ok(ArchiveHandle { tenant_id, archive_id: operation_id, total_bytes: total })
    }

    /// Chunk `sequence` of an archive (`None` after the last).
    pub async fn chunk(&self, archive: &ArchiveHandle, sequence: i32) -> Result<Option<Vec<u8>>> {
        let context = TenantContext::new(archive.tenant_id, RequestContext::system());
        let archive_id = archive.archive_id;
        self.database.read(&context, async move |on| Ok(db::archives::chunk(on, archive_id, sequence).await?)).await
    }

    /// Stores and verifies an uploaded archive, then starts the import that applies it. A
    /// tampered or truncated archive is INVALID_ARGUMENT `ARCHIVE_INVALID`; whatever the
    /// failure, the upload is deleted.
    pub async fn import<S>(&self, request: &RequestContext, options: ImportOptions, mut upload: S) -> Result<Operation>
    where
        S: Stream<Item = Result<Vec<u8>>> + Unpin + Send,
    {
        if !self.provisioner.is_configured() {
            return Err(Error::new(Reason::SchemaTierUnavailable));
        }
        let tenant_id = match options.tenant_id {
            None => Uuid::now_v7(),
            Some(id) => {
                // A retry of a keyed import finds its tenant created: the claim decides.
                let retried = match options.request_id {
                    None => false,
                    Some(request_id) => {
                        self.database
                            .run(&TenantContext::new(id, request.clone()), async |transaction| {
                                idempotency::platform_record_exists(transaction, request_id, IMPORT_METHOD).await
                            })
                            .await?
                    }
                };
                self.resolver.invalidate(id, None).await;
                match self.resolver.state(id).await? {
                    _ if retried => id,
                    None | Some(TenantState::Purged) => id,
                    Some(_) => return Err(Error::already_exists(Reason::TenantAlreadyExists, "options.tenant_id")),
                }
            }
        };
        let upload_id = Uuid::now_v7();
        let context = TenantContext::new(tenant_id, request.clone());
        let stored = async {
            let mut verifier = Verifier::new(ARCHIVED_TABLES);
            let mut sequence = 0;
            while let Some(bytes) = upload.next().await {
                for piece in bytes?.chunks(MAX_CHUNK_BYTES) {
                    verifier.push(piece)?;
                    self.database
                        .run(&context, async |transaction| {
                            db::archives::insert_chunk(transaction, upload_id, sequence, piece)
                                .await
                                .map_err(chunk_error)
                        })
                        .await?;
                    sequence += 1;
                }
            }
            Ok((verifier.finish()?, sequence))
        }
        .await;
        let started = match stored {
            Ok((manifest, chunks)) => self.start_import(&context, &options, upload_id, chunks, &manifest).await,
            Err(error) => Err(error),
        };
        match started {
            Ok((operation, false)) => Ok(operation),
            Ok((operation, true)) => {
                // A replay: the first upload is the one imported.
                self.discard(&context, upload_id).await;
                Ok(operation)
            }
            Err(error) => {
                self.discard(&context, upload_id).await;
                Err(error)
            }
        }
    }

    /// Starts the import of a verified upload (once per request id); `true` with a replay.
    async fn start_import(
        &self,
        context: &TenantContext,
        options: &ImportOptions,
        upload_id: Uuid,
        upload_chunks: i32,
        manifest: &Manifest,
    ) -> Result<(Operation, bool)> {
        let tenant_id = context.tenant_id();
        let slug = match &options.slug {
            Some(slug) => slug.as_str().to_owned(),
            None => manifest.tenant["slug"].as_str().unwrap_or_default().to_owned(),
        };
        Slug::parse(&slug)
            .map_err(|description| Error::invalid(Reason::TenantSlugMalformed, "options.slug", description))?;
        let tier = match options.isolation_tier {
            Some(tier) => tier,
            None => manifest.tenant["isolation_tier"].as_str().and_then(IsolationTier::parse).unwrap_or_default(),
        };
        let fingerprint = ImportFingerprint {
            tenant_id: options.tenant_id,
            slug: options.slug.as_ref().map(Slug::as_str),
            isolation_tier: options.isolation_tier,
            manifest,
        };
        let request_id = options.request_id.map(|id| id.to_string()).unwrap_or_default();
        let key = RequestKey::new(Scope::Platform, IMPORT_METHOD, &request_id, &fingerprint)?;
        let body = ImportRequest { tenant_id, upload_id, upload_chunks, slug, isolation_tier: tier };
        let body = serde_json::to_value(body).map_err(|error| Error::internal(error.into()))?;
        self.operations.start_once(context, key, OperationKind::ImportTenant, body, "import").await
    }

    /// Deletes the chunks of exports whose retention ended, now and then every
    /// [`SWEEP_INTERVAL`], until `stop`. It looks at exports that expired within the last
    /// [`SWEEP_WINDOW`] (deleting nothing is cheap, but the list of finished operations only
    /// grows); an archive that expired while no replica ran for longer stays until the
    /// tenant's purge, and is refused meanwhile (ARCHIVE_NOT_FOUND) like any expired one.
    pub async fn sweep_expired(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(archives = swept, "expired tenant archives deleted"),
                Err(error) => tracing::warn!(error = %error, "tenant archive sweep failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
            }
        }
    }

    /// One sweep; returns how many expired archives had chunks deleted.
    pub async fn sweep(&self) -> Result<usize> {
        let retention_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let window_ms = i64::try_from(SWEEP_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let expired = self
            .database
            .global(async |connection| Ok(db::archives::expired_exports(connection, retention_ms, window_ms).await?))
            .await?;
        let mut swept = 0;
        for (archive_id, tenant_id) in expired {
            let context = TenantContext::new(tenant_id, RequestContext::system());
            let deleted = self
                .database
                .run(&context, async |transaction| Ok(db::archives::delete_chunks(transaction, archive_id).await?))
                .await?;
            if deleted > 0 {
                swept += 1;
            }
        }
        Ok(swept)
    }

    async fn discard(&self, context: &TenantContext, archive_id: Uuid) {
        let deleted = self
            .database
            .run(context, async |transaction| Ok(db::archives::delete_chunks(transaction, archive_id).await?))
            .await;
        if let Err(error) = deleted {
            tracing::warn!(tenant.id = %context.tenant_id(), error = %error, "archive chunks not deleted");
        }
    }
}

/// The rows of the next page: as many as would have filled [`PAGE_BYTES`] at the last
/// page's average row size, between 1 and [`PAGE_ROWS`].
fn next_page_rows(limit: i64, page_bytes: usize) -> i64 {
    let average = (page_bytes / limit.max(1) as usize).max(1);
    i64::try_from(PAGE_BYTES / average).unwrap_or(PAGE_ROWS).clamp(1, PAGE_ROWS)
}

/// Writes an export's data chunks as they fill.
struct ChunkWriter<'a> {
    database: &'a TenantDb,
    context: TenantContext,
    archive_id: Uuid,
    buffer: Vec<u8>,
    sequence: i32,
}

impl ChunkWriter<'_> {
    async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = MAX_CHUNK_BYTES - self.buffer.len();
            let (head, tail) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(head);
            bytes = tail;
            if self.buffer.len() == MAX_CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let (archive_id, sequence, bytes) = (self.archive_id, self.sequence, &self.buffer);
        self.database
            .run(&self.context, async |transaction| {
                db::archives::insert_chunk(transaction, archive_id, sequence, bytes).await.map_err(chunk_error)
            })
            .await?;
        self.buffer.clear();
        self.sequence += 1;
        Ok(())
    }
}

/// Runs `export_tenant` and `import_tenant` operations.
pub struct ArchiveHandler {
    kind: OperationKind,
    database: TenantDb,
    provisioner: Provisioner,
    resolver: Arc<TenantResolver>,
}

impl ArchiveHandler {
    /// The handler of `kind` (ExportTenant or ImportTenant).
    pub fn new(
        kind: OperationKind,
        database: TenantDb,
        provisioner: Provisioner,
        resolver: Arc<TenantResolver>,
    ) -> Self {
        Self { kind, database, provisioner, resolver }
    }

    async fn connect(&self) -> Result<AsyncPgConnection, Stop> {
        Ok(self.provisioner.connect().await?)
    }

    async fn delete_chunks(&self, tenant_id: Uuid, archive_id: Uuid) -> Result<(), Stop> {
        let context = TenantContext::new(tenant_id, RequestContext::system());
        self.database
            .run(&context, async |transaction| Ok(db::archives::delete_chunks(transaction, archive_id).await?))
            .await?;
        Ok(())
    }

    async fn export(&self, run: &OperationRun) -> Result<serde_json::Value, Stop> {
        let ExportRequest { tenant_id } = parse_request(run)?;
        let archive_id = run.operation.id;
        // A repeated run starts over.
        self.delete_chunks(tenant_id, archive_id).await?;
        if run.checkpoint("export", 1, serde_json::json!({})).await? {
            return Err(Stop::Cancelled);
        }
        let database = |error: diesel::result::Error| Stop::Interrupted(Error::from(error));
        let (mut snapshot, entry) = db::archives::Snapshot::begin(self.database.pool(), tenant_id).await?;
        let Some(entry) = entry else {
            return Err(Stop::Failed(Error::new(Reason::TenantNotFound)));
        };
        let connection = snapshot.connection();
        let tier = IsolationTier::parse(&entry.isolation_tier).unwrap_or_default();
        let mut writer = ChunkWriter {
            database: &self.database,
            context: TenantContext::new(tenant_id, RequestContext::system()),
            archive_id,
            buffer: Vec::with_capacity(MAX_CHUNK_BYTES),
            sequence: 1,
        };
        let mut data = Digester::default();
        let mut tables = Vec::new();
        for (index, table) in ARCHIVED_TABLES.iter().enumerate() {
            let columns = db::archives::columns(connection, table).await.map_err(database)?;
            let mut digest = Digester::default();
            let mut after = None;
            let mut limit = FIRST_PAGE_ROWS;
            loop {
                let rows =
                    db::archives::page(connection, tenant_id, tier, table, after, limit).await.map_err(database)?;
                let page_bytes: usize = rows.iter().map(|row| row.row.len()).sum();
                let full = rows.len() as i64 == limit;
                for row in &rows {
                    let line = row_line(table, &row.row);
                    digest.line(line.as_bytes());
                    data.line(line.as_bytes());
                    writer.write(line.as_bytes()).await?;
                }
                after = rows.last().map(|row| row.id);
                if !full {
                    break;
                }
                limit = next_page_rows(limit, page_bytes);
            }
            tables.push(TableManifest {
                name: (*table).to_owned(),
                columns: columns
                    .into_iter()
                    .map(|column| ColumnManifest { name: column.name, sql_type: column.sql_type })
                    .collect(),
                rows: digest.lines,
                sha256: digest.finish(),
            });
            let percent = 5 + (90 * (index as i32 + 1)) / ARCHIVED_TABLES.len() as i32;
            if run.checkpoint("export", percent, serde_json::json!({"rows": data.lines})).await? {
                self.delete_chunks(tenant_id, archive_id).await?;
                return Err(Stop::Cancelled);
            }
        }
        snapshot.end().await.map_err(database)?;
        writer.flush().await?;
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
        let rows = tables.iter().map(|table| (table.name.clone(), serde_json::Value::from(table.rows))).collect();
        let data_bytes = data.bytes();
        let manifest = Manifest {
            format: format::FORMAT.to_owned(),
            version: format::VERSION,
            tenantd_version: env!("CARGO_PKG_VERSION").to_owned(),
            export_time: Utc::now(),
            tenant_id,
            tenant: json(&entry.tenant),
            domains: serde_json::from_str(&entry.domains)
                .map_err(|error| Stop::Failed(Error::internal(error.into())))?,
            channel_bindings: serde_json::from_str::<Vec<ChannelBinding>>(&entry.channel_bindings)
                .map_err(|error| Stop::Failed(Error::internal(error.into())))?,
            tables,
            data_bytes,
            data_sha256: data.finish(),
        };
        let mut line = serde_json::to_vec(&manifest).map_err(|error| Stop::Failed(Error::internal(error.into())))?;
        line.push(b'\n');
        if line.len() > MAX_CHUNK_BYTES {
            return Err(Stop::Failed(Error::internal(anyhow::anyhow!("the manifest is larger than a chunk"))));
        }
        let manifest_bytes = line.len() as u64;
        writer.buffer = line;
        writer.sequence = 0;
        writer.flush().await?;
        tracing::info!(tenant.id = %tenant_id, bytes = data_bytes + manifest_bytes, "tenant exported");
        Ok(serde_json::json!({
            "tenant_id": tenant_id,
            "archive": format!("operations/{archive_id}"),
            "bytes": data_bytes + manifest_bytes,
            "rows": serde_json::Value::Object(rows),
        }))
    }
}

/// What a violated constraint means when archive chunks are written; `None` for a
/// constraint this module does not expect (INTERNAL). A chunk that exists already was written
/// by another run of the same archive's operation (which holds it now). Public so that
/// tests/api/citus.rs can check every constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "tenant_archive_chunks_pkey" => Some(Error::new(Reason::TenantOperationInProgress)),
        _ => None,
    }
}

fn chunk_error(error: diesel::result::Error) -> Error {
    crate::error::from_database(error, constraint_error)
}

fn parse_request<T: serde::de::DeserializeOwned>(run: &OperationRun) -> Result<T, Stop> {
    serde_json::from_value(run.operation.request.clone()).map_err(|error| Stop::Failed(Error::internal(error.into())))
}

impl OperationHandler for ArchiveHandler {
    fn kind(&self) -> OperationKind {
        self.kind
    }

    fn run<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<serde_json::Value, Stop>> {
        match self.kind {
            OperationKind::ImportTenant => Box::pin(self.import(run)),
            _ => Box::pin(self.export(run)),
        }
    }

    fn abandon<'r>(&'r self, run: &'r OperationRun) -> BoxFuture<'r, Result<(), Stop>> {
        Box::pin(async move {
            match self.kind {
                OperationKind::ImportTenant => self.abandon_import(run).await,
                _ => {
                    let request: ExportRequest = parse_request(run)?;
                    self.delete_chunks(request.tenant_id, run.operation.id).await
                }
            }
        })
    }
}
