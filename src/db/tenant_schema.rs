//! Tenant schemas: the schema isolation tier (decision 0018).
//!
//! A schema tenant's users, documents and settings live in a PostgreSQL schema of its own,
//! `tenant_<32 hex digits of its id>` ([`schema_name`]), never named from user input. Its
//! tables ([`TENANT_SCHEMA_TABLES`]) are built from the shared tables' catalog entries, with
//! row-level security enabled and forced under the wrapped fail-closed policy, owned by
//! `tenantd_owner` and granted to `tenantd_app` exactly like the shared tables. The tenant's
//! API keys, audit events and idempotency records stay in the shared tables (the event stream
//! reads audit events across tenants, decision 0015; keys authenticate before a tier is known).
//!
//! DDL never runs as the app role: [`provision`] and [`migrate_schema`] take a connection of
//! the provisioning role (`tenantd_provisioner`) or the migration role, and act as
//! `tenantd_owner` for the length of one transaction (`SET LOCAL ROLE`). Each runs in one
//! transaction, so a schema exists only complete, together with the version stamp in
//! `tenants.schema_version` that says so.
//!
//! Requests reach the schema through the tenant transaction, which sets the search path
//! with [`set_search_path_statement`] (see [`crate::db::tenant_tx`]).

use diesel::QueryResult;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a tenant's data lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationTier {
    /// In the shared tables, next to other tenants' rows (row-level security apart).
    #[default]
    Pooled,
    /// In a schema of its own ([`schema_name`]).
    Schema,
}

impl IsolationTier {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pooled => "pooled",
            Self::Schema => "schema",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pooled" => Some(Self::Pooled),
            "schema" => Some(Self::Schema),
            _ => None,
        }
    }
}

/// The tenant tables a schema tenant has in its own schema, in creation order (a table
/// comes after those its foreign keys reference). Every other tenant table stays shared.
pub const TENANT_SCHEMA_TABLES: &[&str] = &["users", "documents", "tenant_settings"];

/// One tenant-schema migration: what `tenantd migrate` applies to every tenant schema that
/// has not reached `version` (the shared tables get the same change as a diesel migration).
#[derive(Debug, Clone, Copy)]
pub struct SchemaMigration {
    /// The version stamped into `tenants.schema_version` once applied: the version of the
    /// diesel migration that made the same change to the shared tables.
    pub version: &'static str,
    /// Applies the change to the schema of the tenant given; runs as `tenantd_owner`
    /// inside the migration's transaction.
    pub apply: for<'a> fn(&'a mut AsyncPgConnection, Uuid) -> futures_util::future::BoxFuture<'a, QueryResult<()>>,
}

/// Every tenant-schema migration, oldest first. A new tenant-table migration adds an entry
/// here; a newly provisioned schema is created in the current shape and stamped with the
/// last version.
pub const SCHEMA_MIGRATIONS: &[SchemaMigration] = &[SchemaMigration {
    version: "20261203000014",
    apply: |connection, tenant_id| Box::pin(secure(connection, tenant_id)),
}];

/// The version a tenant schema must have reached for its tenant to be served.
pub fn latest_schema_version() -> &'static str {
    SCHEMA_MIGRATIONS.last().map_or("", |migration| migration.version)
}

/// The schema of a schema tenant: `tenant_` and the 32 lowercase hex digits of its id.
pub fn schema_name(tenant_id: Uuid) -> String {
    let mut buffer = Uuid::encode_buffer();
    format!("tenant_{}", tenant_id.simple().encode_lower(&mut buffer))
}

/// Quotes an identifier for SQL text: wraps it in double quotes and doubles any inside.
/// Every identifier tenantd writes into SQL text (a tenant's schema name) goes through it.
pub fn quote_identifier(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The fixed text before the schema in [`set_search_path_statement`].
pub const SET_SEARCH_PATH_PREFIX: &str = "SET LOCAL search_path = ";

/// The statement that routes a transaction to a schema tenant's schema:
/// `SET LOCAL search_path = "tenant_<hex>", public`. Its own statement, transaction-local
/// like the tenant setting, built only from the tenant's [`Uuid`]. The tenant's schema comes
/// first, so its tables are found there; the shared tables it has no copy of (tenants, API
/// keys, audit events, idempotency records) are found in `public`.
pub fn set_search_path_statement(tenant_id: Uuid) -> String {
    format!("{SET_SEARCH_PATH_PREFIX}{}, public", quote_identifier(&schema_name(tenant_id)))
}

/// The explicitly configured path for tenant-schema DDL at run time: a connection URL of the
/// provisioning role (`tenantd_provisioner`, which may only become `tenantd_owner`), or none,
/// in which case schema tenants cannot be created (`SCHEMA_TIER_UNAVAILABLE`). A connection
/// is opened per provisioning and closed after it: provisioning is rare, and a pool would
/// hold a privileged session open for nothing.
#[derive(Debug, Clone, Default)]
pub struct Provisioner {
    target: Option<super::connect::PgTarget>,
}

impl Provisioner {
    /// Provisions through `target`; `None` disables the schema tier.
    pub fn new(target: Option<super::connect::PgTarget>) -> Self {
        Self { target }
    }

    /// A fresh connection of the provisioning role (a tenant move's connection, which makes
    /// its own transactions as `tenantd_owner`). Failures are UNAVAILABLE
    /// `SCHEMA_TIER_UNAVAILABLE` when unconfigured, `DATABASE_UNAVAILABLE` otherwise.
    pub async fn connect(&self) -> crate::error::Result<AsyncPgConnection> {
        use crate::error::{Error, Reason};
        let target = self.target.as_ref().ok_or_else(|| Error::new(Reason::SchemaTierUnavailable))?;
        target
            .connect()
            .await
            .map_err(|error| Error::unavailable(Reason::DatabaseUnavailable, anyhow::Error::new(error)))
    }

    /// Whether schema tenants can be provisioned.
    pub fn is_configured(&self) -> bool {
        self.target.is_some()
    }

    /// [`provision`] on a fresh connection of the provisioning role. Any failure is
    /// UNAVAILABLE with `TENANT_PROVISIONING` (the detail goes to the log only): the tenant
    /// stays PROVISIONING and a retry finishes it.
    pub async fn provision(&self, tenant_id: Uuid) -> crate::error::Result<Provisioned> {
        use crate::error::{Error, Reason};
        let target = self.target.as_ref().ok_or_else(|| Error::new(Reason::SchemaTierUnavailable))?;
        let failed = |error: anyhow::Error| {
            tracing::warn!(tenant.id = %tenant_id, error = %format!("{error:#}"), "tenant schema provisioning failed");
            Error::unavailable(Reason::TenantProvisioning, error)
        };
        let mut connection =
            target.connect().await.map_err(|error| failed(anyhow::Error::new(error).context("connecting")))?;
        provision(&mut connection, tenant_id).await.map_err(|error| failed(anyhow::Error::new(error)))
    }
}

/// What [`provision`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// The schema was created and stamped.
    Created,
    /// The schema already existed and was stamped (a retry after a provisioning that
    /// committed).
    AlreadyComplete,
}

/// Creates the schema of `tenant_id` with every table of [`TENANT_SCHEMA_TABLES`], secured,
/// and stamps `tenants.schema_version` with [`latest_schema_version`], in one transaction on
/// `connection` (the provisioning or migration role, which may become `tenantd_owner`). Safe
/// to repeat: a schema that is already stamped is left alone. The tenant's registry row must
/// exist.
pub async fn provision(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Provisioned> {
    begin_as_owner(connection, OwnerTransaction::ReadCommitted, None).await?;
    let outcome = provision_in_transaction(connection, tenant_id).await;
    finish(connection, outcome).await
}

/// [`provision`]'s work, inside a transaction that is already `tenantd_owner` (an import's).
pub(crate) async fn provision_in_transaction(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Provisioned> {
    if lock_version(connection, tenant_id).await?.is_some() {
        return Ok(Provisioned::AlreadyComplete);
    }
    let schema = schema_name(tenant_id);
    connection.batch_execute(&format!("CREATE SCHEMA {}", quote_identifier(&schema))).await?;
    diesel::sql_query("SELECT tenantd_create_tenant_tables($1, $2, $3)")
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(&schema)
        .bind::<Array<Text>, _>(TENANT_SCHEMA_TABLES)
        .execute(connection)
        .await?;
    secure(connection, tenant_id).await?;
    stamp(connection, tenant_id, latest_schema_version()).await?;
    Ok(Provisioned::Created)
}

/// Drops the schema of `tenant_id` and everything in it, and clears its version stamp, in
/// one transaction (for a provisioning abandoned by cleanup, or a tenant moved out of the
/// schema tier). Safe to repeat.
pub async fn drop_schema(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin_as_owner(connection, OwnerTransaction::ReadCommitted, None).await?;
    let outcome = async {
        connection
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_identifier(&schema_name(tenant_id))))
            .await?;
        diesel::sql_query("UPDATE tenants SET schema_version = NULL WHERE id = $1")
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await
            .map(drop)
    }
    .await;
    finish(connection, outcome).await
}

/// What [`migrate_schema`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaMigrated {
    /// The schema was already current.
    Current,
    /// These versions were applied.
    Applied(Vec<&'static str>),
    /// The tenant has no provisioned schema (pooled, or still provisioning).
    NoSchema,
}

/// Brings the schema of `tenant_id` to [`latest_schema_version`]: applies, in one
/// transaction, every [`SCHEMA_MIGRATIONS`] entry after the stamped version, and stamps the
/// last. The tenant's registry row is locked meanwhile, so two migrators never apply the
/// same step; a crash rolls the whole schema back to its previous version, so a rerun
/// resumes where it stopped.
pub async fn migrate_schema(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<SchemaMigrated> {
    begin_as_owner(connection, OwnerTransaction::ReadCommitted, None).await?;
    let outcome = async {
        let Some(version) = lock_version(connection, tenant_id).await? else {
            return Ok(SchemaMigrated::NoSchema);
        };
        let pending: Vec<&SchemaMigration> =
            SCHEMA_MIGRATIONS.iter().filter(|migration| migration.version > version.as_str()).collect();
        let Some(last) = pending.last() else {
            return Ok(SchemaMigrated::Current);
        };
        for migration in &pending {
            (migration.apply)(connection, tenant_id).await?;
        }
        stamp(connection, tenant_id, last.version).await?;
        Ok(SchemaMigrated::Applied(pending.iter().map(|migration| migration.version).collect()))
    }
    .await;
    finish(connection, outcome).await
}

/// Row-level security, the wrapped policy and the app role's grants on every table of the
/// tenant's schema (idempotent).
async fn secure(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    diesel::sql_query("SELECT tenantd_secure_tenant_tables($1, $2)")
        .bind::<Text, _>(schema_name(tenant_id))
        .bind::<Array<Text>, _>(TENANT_SCHEMA_TABLES)
        .execute(connection)
        .await
        .map(drop)
}

#[derive(diesel::QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    schema_version: Option<String>,
}

/// The stamped version of the tenant's schema (`None`: no schema yet), locking the tenant's
/// row until the transaction ends.
async fn lock_version(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Option<String>> {
    let row: VersionRow = diesel::sql_query("SELECT schema_version FROM tenants WHERE id = $1 FOR UPDATE")
        .bind::<SqlUuid, _>(tenant_id)
        .get_result(connection)
        .await?;
    Ok(row.schema_version)
}

async fn stamp(connection: &mut AsyncPgConnection, tenant_id: Uuid, version: &str) -> QueryResult<()> {
    diesel::sql_query("UPDATE tenants SET schema_version = $2 WHERE id = $1")
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(version)
        .execute(connection)
        .await
        .map(drop)
}

/// The isolation of a transaction begun with [`begin_as_owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerTransaction {
    /// Each statement sees what committed before it (DDL, a cutover, a purge batch).
    ReadCommitted,
    /// Read committed, refusing writes (a purge's verification scan).
    ReadCommittedReadOnly,
    /// One snapshot for every statement (a move's copy and catch-up).
    RepeatableRead,
    /// One snapshot, refusing writes (an export, a purge's count).
    RepeatableReadReadOnly,
}

impl OwnerTransaction {
    /// The BEGIN statement of this kind of transaction.
    pub(crate) fn begin_statement(self) -> &'static str {
        match self {
            Self::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Self::ReadCommittedReadOnly => "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY",
            Self::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            Self::RepeatableReadReadOnly => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        }
    }
}

/// Begins a transaction as `tenantd_owner` on a provisioning or migration connection, and,
/// with `tenant_id`, scopes it to that tenant (the one tenant statement, on its own), so
/// that row-level security still applies to the owner's work. The one way DDL, moves,
/// purges and archives begin their transactions.
///
/// They are begun and ended by hand ([`finish`]) on a connection of their own, never
/// borrowed from the app pool, because one unit of their work spans several repository
/// calls between BEGIN and COMMIT (a move's phases, a purge's verification and tombstone,
/// an export's pages); diesel-async's transaction manager never sees them, so nothing
/// else on these connections may use it.
pub(crate) async fn begin_as_owner(
    connection: &mut AsyncPgConnection,
    transaction: OwnerTransaction,
    tenant_id: Option<Uuid>,
) -> QueryResult<()> {
    connection.batch_execute(transaction.begin_statement()).await?;
    connection.batch_execute("SET LOCAL ROLE tenantd_owner").await?;
    match tenant_id {
        Some(tenant_id) => connection.batch_execute(&super::tenant_tx::set_tenant_statement(tenant_id)).await,
        None => Ok(()),
    }
}

/// COMMIT after success, ROLLBACK after a failure (for transactions begun by hand on a
/// connection of its own, as DDL and moves run).
pub(crate) async fn finish<T>(connection: &mut AsyncPgConnection, outcome: QueryResult<T>) -> QueryResult<T> {
    match outcome {
        Ok(value) => {
            connection.batch_execute("COMMIT").await?;
            Ok(value)
        }
        Err(error) => {
            let _ = connection.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_name_is_tenant_and_the_ids_hex_digits() {
        let id = Uuid::parse_str("0190a0a0-0000-7000-8000-00000000000A").expect("a uuid");
        assert_eq!(schema_name(id), "tenant_0190a0a000007000800000000000000a");
    }

    #[test]
    fn quoting_wraps_an_identifier_and_doubles_its_quotes() {
        assert_eq!(quote_identifier("tenant_ab"), "\"tenant_ab\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_identifier("x\"; DROP TABLE users; --"), "\"x\"\"; DROP TABLE users; --\"");
    }

    #[test]
    fn the_search_path_statement_names_the_quoted_schema_then_public() {
        let id = Uuid::parse_str("0190a0a0-0000-7000-8000-000000000001").expect("a uuid");
        assert_eq!(
            set_search_path_statement(id),
            "SET LOCAL search_path = \"tenant_0190a0a0000070008000000000000001\", public"
        );
    }

    #[test]
    fn tiers_round_trip_through_their_stored_form() {
        for tier in [IsolationTier::Pooled, IsolationTier::Schema] {
            assert_eq!(IsolationTier::parse(tier.as_str()), Some(tier));
        }
        assert_eq!(IsolationTier::parse("dedicated"), None);
    }
}
