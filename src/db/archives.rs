//! The SQL of tenant archives (decision 0021).
//!
//! Two kinds of work:
//! - the chunks of an archive (`tenant_archive_chunks`: an export's, or an upload's), read and
//!   written through the tenant transaction like any tenant table;
//! - an export's snapshot (`REPEATABLE READ, READ ONLY`, every table read in pages from one
//!   snapshot) and an import's transactions (the claim that creates the tenant PROVISIONING, its
//!   schema and identifiers; a transaction per batch of rows; the final one that makes it ACTIVE:
//!   see [`crate::domain::archives`]). All are begun by hand and scoped to the tenant with the
//!   same `SET LOCAL app.tenant_id` statement as the tenant transaction, so row-level security
//!   stays forced: the export's ([`Snapshot`]) as the app role, on a dedicated connection of the
//!   app role; the import's as `tenantd_owner` on a connection of the provisioning role of its
//!   own, like a move's ([`super::moves`]). Table names come from [`ARCHIVED_TABLES`] and schema
//!   names from the tenant's id, each through [`quote_identifier`]; values are bind parameters.

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::tenant_archive_chunks;
use super::tenant_schema::{
    IsolationTier, OwnerTransaction, TENANT_SCHEMA_TABLES, begin_as_owner, quote_identifier, schema_name,
};
use super::tenant_tx::{TenantQuery, TenantTx, set_tenant_statement};
use super::{AppConnection, PgPool};

/// Every tenant table whose rows an archive carries, parents first (the order of an
/// archive's tables and of an import's inserts).
pub const ARCHIVED_TABLES: &[&str] = &["users", "documents", "tenant_settings", "api_keys", "audit_events"];

/// The tenant tables an archive does not carry as rows: identifiers are in the manifest,
/// idempotency records and quota counters are not the tenant's data (counters are counted
/// again on import), the event index is rebuilt by its trigger as an import writes the audit
/// events, and archives do not contain archives. Every table with a `tenant_id`
/// column is in exactly one of the two lists (`tests/api/archives.rs` checks the catalog).
pub const UNARCHIVED_TABLES: &[&str] = &[
    "tenant_domains",
    "tenant_channel_bindings",
    "idempotency_records",
    "tenant_quota_usage",
    "tenant_archive_chunks",
    "event_transactions",
];

/// Columns an archive carries but an import does not restore: an audit event's
/// `transaction_id` is its position in the event stream (decision 0015), which a restored
/// event takes anew from the import's transaction.
pub const UNRESTORED_COLUMNS: &[(&str, &str)] = &[("audit_events", "transaction_id")];

/// The largest chunk stored.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Stores one chunk of an archive of the transaction's tenant.
pub async fn insert_chunk(
    transaction: &mut TenantTx<'_>,
    archive_id: Uuid,
    sequence: i32,
    bytes: &[u8],
) -> QueryResult<()> {
    let tenant_id = transaction.tenant_id();
    diesel::insert_into(tenant_archive_chunks::table)
        .values((
            tenant_archive_chunks::tenant_id.eq(tenant_id),
            tenant_archive_chunks::archive_id.eq(archive_id),
            tenant_archive_chunks::sequence.eq(sequence),
            tenant_archive_chunks::bytes.eq(bytes),
        ))
        .execute(transaction.connection())
        .await
        .map(drop)
}

/// Deletes every chunk of an archive of the transaction's tenant; returns how many.
pub async fn delete_chunks(transaction: &mut TenantTx<'_>, archive_id: Uuid) -> QueryResult<usize> {
    let tenant_id = transaction.tenant_id();
    diesel::delete(
        tenant_archive_chunks::table
            .filter(tenant_archive_chunks::tenant_id.eq(tenant_id))
            .filter(tenant_archive_chunks::archive_id.eq(archive_id)),
    )
    .execute(transaction.connection())
    .await
}

/// One chunk of an archive of the tenant, if it exists.
pub fn chunk<'c>(
    on: impl TenantQuery<'c>,
    archive_id: Uuid,
    sequence: i32,
) -> BoxFuture<'c, QueryResult<Option<Vec<u8>>>> {
    let tenant_id = on.tenant_id();
    on.optional(
        tenant_archive_chunks::table
            .filter(tenant_archive_chunks::tenant_id.eq(tenant_id))
            .filter(tenant_archive_chunks::archive_id.eq(archive_id))
            .filter(tenant_archive_chunks::sequence.eq(sequence))
            .select(tenant_archive_chunks::bytes),
    )
}

/// The length of an archive of the tenant (`None`: it has no chunk).
pub fn archive_bytes<'c>(on: impl TenantQuery<'c>, archive_id: Uuid) -> BoxFuture<'c, QueryResult<Option<i64>>> {
    let tenant_id = on.tenant_id();
    let query = tenant_archive_chunks::table
        .filter(tenant_archive_chunks::tenant_id.eq(tenant_id))
        .filter(tenant_archive_chunks::archive_id.eq(archive_id))
        .select(sql::<Nullable<BigInt>>("sum(octet_length(bytes))::bigint"));
    let future = on.optional(query);
    Box::pin(async move { Ok(future.await?.flatten()) })
}

/// The qualified name of an archived table of `tenant_id` on `tier`.
fn qualified(tier: IsolationTier, tenant_id: Uuid, table: &str) -> String {
    if tier == IsolationTier::Schema && TENANT_SCHEMA_TABLES.contains(&table) {
        format!("{}.{}", quote_identifier(&schema_name(tenant_id)), quote_identifier(table))
    } else {
        format!("public.{}", quote_identifier(table))
    }
}

/// A column of a table, as the catalog names it and PostgreSQL spells its type.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct CatalogColumn {
    /// The column.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its type (`format_type`), e.g. `timestamp with time zone`.
    #[diesel(sql_type = Text)]
    pub sql_type: String,
}

/// The columns of the shared table `table`, in order (a tenant schema's copy has the same).
pub async fn columns(connection: &mut AsyncPgConnection, table: &str) -> QueryResult<Vec<CatalogColumn>> {
    diesel::sql_query(
        "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS sql_type
         FROM pg_attribute a
         WHERE a.attrelid = format('public.%I', $1::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind::<Text, _>(table)
    .load(connection)
    .await
}

/// The tenant's registry entry, as PostgreSQL renders it (JSON text).
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct RegistryEntry {
    /// The `tenants` row.
    #[diesel(sql_type = Text)]
    pub tenant: String,
    /// Its domains, sorted (a JSON array).
    #[diesel(sql_type = Text)]
    pub domains: String,
    /// Its channel bindings, sorted (a JSON array of `{channel_type, external_id}`).
    #[diesel(sql_type = Text)]
    pub channel_bindings: String,
    /// Its tier.
    #[diesel(sql_type = Text)]
    pub isolation_tier: String,
}

/// An export's snapshot of one tenant: a dedicated connection of the app role (made by the
/// app pool's manager, but not one of its slots, so a long export takes none from requests,
/// and closed when dropped), inside one `REPEATABLE READ, READ ONLY` transaction scoped to the
/// tenant by the one tenant statement. It runs as the app role, so row-level security applies
/// to every page exactly as to a request, and needs no provisioning role (the app role reads
/// every archived table, the registry and its identifiers, and a schema tenant's tables).
pub struct Snapshot {
    connection: AppConnection,
}

impl Snapshot {
    /// Begins the snapshot of `tenant_id` and reads its registry entry in it (`None`: no such
    /// tenant). A failed connect is UNAVAILABLE `DATABASE_UNAVAILABLE`.
    pub async fn begin(pool: &PgPool, tenant_id: Uuid) -> crate::error::Result<(Self, Option<RegistryEntry>)> {
        use crate::error::{Error, Reason};
        let connection = pool
            .dedicated_connection()
            .await
            .map_err(|error| Error::unavailable(Reason::DatabaseUnavailable, anyhow::Error::new(error)))?;
        let mut snapshot = Self { connection };
        let connection = snapshot.connection();
        connection.batch_execute(OwnerTransaction::RepeatableReadReadOnly.begin_statement()).await?;
        connection.batch_execute(&set_tenant_statement(tenant_id)).await?;
        let entry = registry_entry(connection, tenant_id).await?;
        Ok((snapshot, entry))
    }

    /// The snapshot's connection, for [`columns`] and [`page`].
    pub fn connection(&mut self) -> &mut AsyncPgConnection {
        &mut self.connection
    }

    /// Ends the snapshot (COMMIT of a read-only transaction); the connection closes.
    pub async fn end(mut self) -> QueryResult<()> {
        self.connection().batch_execute("COMMIT").await
    }
}

/// The tenant's registry entry, read in the open transaction (`None`: no such tenant).
async fn registry_entry(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Option<RegistryEntry>> {
    diesel::sql_query(
        "SELECT to_jsonb(t)::text AS tenant,
                (SELECT coalesce(jsonb_agg(d.domain ORDER BY d.domain), '[]'::jsonb)
                 FROM public.tenant_domains d WHERE d.tenant_id = t.id)::text AS domains,
                (SELECT coalesce(jsonb_agg(jsonb_build_object('channel_type', b.channel_type,
                                                              'external_id', b.external_id)
                                           ORDER BY b.channel_type, b.external_id), '[]'::jsonb)
                 FROM public.tenant_channel_bindings b WHERE b.tenant_id = t.id)::text AS channel_bindings,
                t.isolation_tier
         FROM public.tenants t WHERE t.id = $1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(connection)
    .await
    .optional()
}

/// One row of an archived table: its id and its JSON text (`to_jsonb`).
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ArchivedRow {
    /// The row's id (the key after tenant_id).
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// The row as PostgreSQL renders it.
    #[diesel(sql_type = Text)]
    pub row: String,
}

/// The next page of `table`'s rows of the tenant after `after` (by id), inside the open
/// snapshot. Every archived table's key is `(tenant_id, id)`.
pub async fn page(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    tier: IsolationTier,
    table: &str,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ArchivedRow>> {
    diesel::sql_query(format!(
        "SELECT t.id, to_jsonb(t)::text AS row FROM {} t
         WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.id > $2)
         ORDER BY t.id LIMIT $3",
        qualified(tier, tenant_id, table)
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(connection)
    .await
}

/// Ends a transaction begun by hand: COMMIT after success, ROLLBACK after a failure.
pub async fn end<T>(connection: &mut AsyncPgConnection, outcome: QueryResult<T>) -> QueryResult<T> {
    super::tenant_schema::finish(connection, outcome).await
}

/// Rolls back a transaction begun by hand (after a failure; the connection is closed after
/// it anyway, which rolls back too).
pub async fn rollback(connection: &mut AsyncPgConnection) {
    let _ = connection.batch_execute("ROLLBACK").await;
}

/// Begins an import into `tenant_id`: one transaction as `tenantd_owner`, scoped to the
/// tenant. End it with [`end`].
pub async fn begin_import(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin_as_owner(connection, OwnerTransaction::ReadCommitted, Some(tenant_id)).await
}

#[derive(diesel::QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
}

/// The state of `tenant_id`, its row locked until the transaction ends (`None`: no tenant).
pub async fn lock_state(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Option<String>> {
    let row: Option<StateRow> = diesel::sql_query("SELECT state FROM public.tenants WHERE id = $1 FOR UPDATE")
        .bind::<SqlUuid, _>(tenant_id)
        .get_result(connection)
        .await
        .optional()?;
    Ok(row.map(|row| row.state))
}

/// The registry entry an import writes.
#[derive(Debug, Clone)]
pub struct ImportedTenant<'a> {
    /// Id.
    pub id: Uuid,
    /// Slug.
    pub slug: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Labels (a JSON object).
    pub labels: &'a serde_json::Value,
    /// Tier.
    pub tier: IsolationTier,
    /// Plan.
    pub plan: Option<&'a str>,
    /// Overrides of the plan's limits (a JSON object).
    pub limit_overrides: &'a serde_json::Value,
    /// The original creation time (RFC 3339).
    pub create_time: &'a str,
    /// The state it is written in.
    pub state: &'a str,
}

/// Creates the tenant's registry row, or writes it over the PURGED tombstone of the same id
/// (which the caller has locked and checked; read [`tombstone`] first, so that [`revert`] can
/// put it back): its names, labels, plan, overrides, state and tier, its deletion and purge
/// times cleared, its creation time kept (the archive's is used for a new row).
pub async fn write_tenant(connection: &mut AsyncPgConnection, tenant: &ImportedTenant<'_>) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO public.tenants (id, slug, display_name, labels, plan, limit_overrides, state, isolation_tier, create_time)
         VALUES ($1, $2, $3, $4::jsonb, $5, $6::jsonb, $7, $8, $9::timestamptz)
         ON CONFLICT (id) DO UPDATE SET slug = EXCLUDED.slug, display_name = EXCLUDED.display_name,
             labels = EXCLUDED.labels, plan = EXCLUDED.plan, limit_overrides = EXCLUDED.limit_overrides,
             state = EXCLUDED.state, isolation_tier = EXCLUDED.isolation_tier, delete_time = NULL,
             purge_time = NULL, revision = tenants.revision + 1, update_time = now()",
    )
    .bind::<SqlUuid, _>(tenant.id)
    .bind::<Text, _>(tenant.slug)
    .bind::<Text, _>(tenant.display_name)
    .bind::<Text, _>(tenant.labels.to_string())
    .bind::<Nullable<Text>, _>(tenant.plan)
    .bind::<Text, _>(tenant.limit_overrides.to_string())
    .bind::<Text, _>(tenant.state)
    .bind::<Text, _>(tenant.tier.as_str())
    .bind::<Text, _>(tenant.create_time)
    .execute(connection)
    .await
    .map(drop)
}

/// Creates the tenant's schema inside the open import transaction (see
/// [`super::tenant_schema::provision`]), and routes the rest of the transaction to it.
pub async fn provision_schema(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    super::tenant_schema::provision_in_transaction(connection, tenant_id).await?;
    Ok(())
}

/// Inserts rows of `table` (a JSON array of rows as an archive carries them) for the tenant
/// on `tier`, taking `columns` from each row and the tenant id from the transaction's
/// tenant. Returns how many rows were inserted.
pub async fn insert_rows(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    tier: IsolationTier,
    table: &str,
    columns: &[String],
    rows: &str,
) -> QueryResult<usize> {
    let target = qualified(tier, tenant_id, table);
    let names = columns.iter().map(|column| quote_identifier(column)).collect::<Vec<_>>().join(", ");
    let values = columns
        .iter()
        .map(|column| if column == "tenant_id" { "$1".to_owned() } else { format!("r.{}", quote_identifier(column)) })
        .collect::<Vec<_>>()
        .join(", ");
    diesel::sql_query(format!(
        "INSERT INTO {target} ({names}) SELECT {values} FROM jsonb_populate_recordset(NULL::{target}, $2::jsonb) r"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(rows)
    .execute(connection)
    .await
}

/// Sets the tenant's quota counters to what its rows use (an import's rows were not
/// charged one by one).
pub async fn recount_quotas(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    tier: IsolationTier,
) -> QueryResult<()> {
    let users = qualified(tier, tenant_id, "users");
    let documents = qualified(tier, tenant_id, "documents");
    diesel::sql_query(format!(
        "INSERT INTO public.tenant_quota_usage (tenant_id, quota, used)
         SELECT $1, 'users', count(*) FROM {users} WHERE tenant_id = $1
         UNION ALL SELECT $1, 'documents', count(*) FROM {documents} WHERE tenant_id = $1
         UNION ALL SELECT $1, 'document_bytes', coalesce(sum(octet_length(content)), 0)::bigint
                   FROM {documents} WHERE tenant_id = $1
         UNION ALL SELECT $1, 'api_keys', count(*) FROM public.api_keys WHERE tenant_id = $1 AND revoke_time IS NULL
         ON CONFLICT (tenant_id, quota) DO UPDATE SET used = EXCLUDED.used"
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .execute(connection)
    .await
    .map(drop)
}

/// Writes the tenant's domains and channel bindings (`(channel_type, external_id)`). A taken
/// one fails with the unique violation of its table's key.
pub async fn write_identifiers(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    domains: &[String],
    bindings: &[(String, String)],
) -> QueryResult<()> {
    diesel::sql_query("INSERT INTO public.tenant_domains (domain, tenant_id) SELECT unnest($2::text[]), $1")
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<diesel::sql_types::Array<Text>, _>(domains)
        .execute(connection)
        .await?;
    let (types, ids): (Vec<&str>, Vec<&str>) =
        bindings.iter().map(|(channel_type, external_id)| (channel_type.as_str(), external_id.as_str())).unzip();
    diesel::sql_query(
        "INSERT INTO public.tenant_channel_bindings (channel_type, external_id, tenant_id)
         SELECT b.channel_type, b.external_id, $1 FROM unnest($2::text[], $3::text[]) AS b (channel_type, external_id)",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<diesel::sql_types::Array<Text>, _>(types)
    .bind::<diesel::sql_types::Array<Text>, _>(ids)
    .execute(connection)
    .await
    .map(drop)
}

/// Sets the tenant's state.
pub async fn set_state(connection: &mut AsyncPgConnection, tenant_id: Uuid, state: &str) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE public.tenants SET state = $2, revision = revision + 1, update_time = now() WHERE id = $1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(state)
    .execute(connection)
    .await
    .map(drop)
}

/// What a PURGED tombstone holds beyond [`super::purge::TOMBSTONE`]'s empty names: what an
/// import that restored it and failed puts back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, diesel::QueryableByName)]
pub struct Tombstone {
    /// Its tier.
    #[diesel(sql_type = Text)]
    pub isolation_tier: String,
    /// Its deletion time (PostgreSQL's text of the timestamptz, exact).
    #[diesel(sql_type = Text)]
    pub delete_time: String,
    /// Its purge time (the same).
    #[diesel(sql_type = Text)]
    pub purge_time: String,
}

/// The PURGED tombstone of `tenant_id` (`None`: no PURGED row).
pub async fn tombstone(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Option<Tombstone>> {
    diesel::sql_query(
        "SELECT isolation_tier, delete_time::text AS delete_time, purge_time::text AS purge_time
         FROM public.tenants WHERE id = $1 AND state = 'purged'",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(connection)
    .await
    .optional()
}

/// Undoes [`write_tenant`] of an import that failed, once its rows are deleted: the PURGED
/// tombstone back as it was (`restore`), or no registry row. Only a PROVISIONING row is
/// touched (a tenant deleted meanwhile is left to its purge). Returns whether a row was.
pub async fn revert(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    restore: Option<&Tombstone>,
) -> QueryResult<bool> {
    let Some(tombstone) = restore else {
        return diesel::sql_query("DELETE FROM public.tenants WHERE id = $1 AND state = 'provisioning'")
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await
            .map(|rows| rows > 0);
    };
    diesel::sql_query(format!(
        "UPDATE public.tenants SET state = 'purged', {}, isolation_tier = $2, delete_time = $3::timestamptz,
                purge_time = $4::timestamptz, revision = revision + 1, update_time = now()
         WHERE id = $1 AND state = 'provisioning'",
        super::purge::TOMBSTONE
    ))
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(&tombstone.isolation_tier)
    .bind::<Text, _>(&tombstone.delete_time)
    .bind::<Text, _>(&tombstone.purge_time)
    .execute(connection)
    .await
    .map(|rows| rows > 0)
}

/// Who an import's audit events name.
#[derive(Debug, Clone)]
pub struct ImportActor<'a> {
    /// `bootstrap` or `operator`.
    pub actor_type: &'a str,
    /// The operator's id, or empty.
    pub actor_id: &'a str,
    /// The request id recorded (the import's operation id).
    pub request_id: &'a str,
}

/// Records an audit event of the tenant inside the open import transaction.
pub async fn record_event(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    actor: &ImportActor<'_>,
    action: &str,
    details: &serde_json::Value,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO public.audit_events
             (tenant_id, id, actor_type, actor_id, action, resource_type, resource_id, request_id, details)
         VALUES ($1, $2, $3, $4, $5, 'tenant', $1::text, $6, $7::jsonb)",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(actor.actor_type)
    .bind::<Text, _>(actor.actor_id)
    .bind::<Text, _>(action)
    .bind::<Text, _>(actor.request_id)
    .bind::<Text, _>(details.to_string())
    .execute(connection)
    .await
    .map(drop)
}

/// Deletes an upload's chunks inside the open import transaction.
pub async fn delete_upload(connection: &mut AsyncPgConnection, tenant_id: Uuid, archive_id: Uuid) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM public.tenant_archive_chunks WHERE tenant_id = $1 AND archive_id = $2")
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<SqlUuid, _>(archive_id)
        .execute(connection)
        .await
        .map(drop)
}

#[derive(diesel::QueryableByName)]
struct ExpiredRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    tenant_id: Uuid,
}

/// Succeeded exports, as (archive id, tenant id), that finished more than `retention_ms`
/// ago but less than `retention_ms + window_ms` ago (the `operations` registry table).
pub async fn expired_exports(
    connection: &mut super::Connection<'_>,
    retention_ms: i64,
    window_ms: i64,
) -> QueryResult<Vec<(Uuid, Uuid)>> {
    let rows: Vec<ExpiredRow> = diesel::sql_query(
        "SELECT id, subject_tenant_id AS tenant_id FROM operations
         WHERE kind = 'export_tenant' AND state = 'succeeded' AND subject_tenant_id IS NOT NULL
           AND done_time < now() - make_interval(secs => $1::bigint / 1000.0)
           AND done_time >= now() - make_interval(secs => ($1::bigint + $2::bigint) / 1000.0)",
    )
    .bind::<BigInt, _>(retention_ms)
    .bind::<BigInt, _>(window_ms)
    .load(connection)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.tenant_id)).collect())
}
