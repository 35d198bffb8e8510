//! The SQL of moving a tenant between isolation tiers (decision 0019). Every function takes a
//! connection of the provisioning role (which becomes `tenantd_owner` for the transaction)
//! and runs its own transaction, scoped to the tenant with the same `SET LOCAL
//! app.tenant_id` statement as the tenant transaction, so row-level security stays forced
//! on both sides. Table and schema names come from [`TENANT_SCHEMA_TABLES`] and the
//! catalog, each through [`quote_identifier`]; values are bind parameters.
//!
//! Only the tables a tenant schema holds move ([`TENANT_SCHEMA_TABLES`], parents first);
//! API keys, audit events and idempotency records stay shared on both tiers.

use diesel::QueryResult;
use diesel::sql_types::{BigInt, Bool, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::tenant_schema::{IsolationTier, TENANT_SCHEMA_TABLES, finish, quote_identifier, schema_name};
use super::tenant_tx::set_tenant_statement;

/// A table's row count and content hash on one tier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableCheck {
    /// The table.
    pub table: String,
    /// Its rows of the tenant.
    pub rows: i64,
    /// The sum of a 64-bit hash of every row's text (order-independent), as decimal text.
    pub hash: String,
}

/// The columns of a shared tenant table, quoted, in order, and which are its primary key.
struct Columns {
    all: Vec<String>,
    key: Vec<String>,
}

#[derive(diesel::QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    key: bool,
}

async fn columns(connection: &mut AsyncPgConnection, table: &str) -> QueryResult<Columns> {
    let rows: Vec<ColumnRow> = diesel::sql_query(
        "SELECT a.attname::text AS name, coalesce(a.attnum = ANY (i.indkey::int2[]), false) AS key
         FROM pg_attribute a
         LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
         WHERE a.attrelid = format('public.%I', $1::text)::regclass AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind::<Text, _>(table)
    .load(connection)
    .await?;
    Ok(Columns {
        all: rows.iter().map(|row| quote_identifier(&row.name)).collect(),
        key: rows.iter().filter(|row| row.key).map(|row| quote_identifier(&row.name)).collect(),
    })
}

/// The qualified name of `table` on `tier` for `tenant_id`.
fn qualified(tier: IsolationTier, tenant_id: Uuid, table: &str) -> String {
    match tier {
        IsolationTier::Pooled => format!("public.{}", quote_identifier(table)),
        IsolationTier::Schema => format!("{}.{}", quote_identifier(&schema_name(tenant_id)), quote_identifier(table)),
    }
}

/// `alias.a, alias.b, ...`
fn list(alias: &str, columns: &[String]) -> String {
    columns.iter().map(|column| format!("{alias}.{column}")).collect::<Vec<_>>().join(", ")
}

/// Begins a transaction as `tenantd_owner`, scoped to `tenant_id`: repeatable read (one
/// snapshot for every table, so copied rows satisfy their foreign keys), or read committed
/// for the cutover, whose statements must each see every write committed before the move
/// lock was granted.
///
/// The transaction is begun and ended by hand ([`super::tenant_schema::finish`]) on a
/// connection of the move's own, never through diesel-async's transaction manager, which
/// therefore never sees it; `isolation` is one of this module's two literals, never input.
async fn begin_as(connection: &mut AsyncPgConnection, tenant_id: Uuid, isolation: &str) -> QueryResult<()> {
    connection.batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}")).await?;
    connection.batch_execute("SET LOCAL ROLE tenantd_owner").await?;
    connection.batch_execute(&set_tenant_statement(tenant_id)).await
}

async fn begin(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin_as(connection, tenant_id, "REPEATABLE READ").await
}

/// Copies the tenant's rows from `source` to `target` in one snapshot, replacing whatever an
/// interrupted copy left in `target`; returns the rows copied per table.
pub async fn copy(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
) -> QueryResult<Vec<(String, usize)>> {
    begin(connection, tenant_id).await?;
    let outcome = async {
        clear_in_transaction(connection, tenant_id, target).await?;
        let mut copied = Vec::new();
        for table in TENANT_SCHEMA_TABLES {
            let columns = columns(connection, table).await?;
            let all = columns.all.join(", ");
            let rows = diesel::sql_query(format!(
                "INSERT INTO {} ({all}) SELECT {all} FROM {} WHERE tenant_id = $1",
                qualified(target, tenant_id, table),
                qualified(source, tenant_id, table),
            ))
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await?;
            copied.push(((*table).to_owned(), rows));
        }
        Ok(copied)
    }
    .await;
    finish(connection, outcome).await
}

/// Deletes the tenant's rows on `tier` (children first) inside the open transaction.
async fn clear_in_transaction(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    tier: IsolationTier,
) -> QueryResult<()> {
    for table in TENANT_SCHEMA_TABLES.iter().rev() {
        // A table name cannot be a bind parameter: it comes from the constant table list and
        // the tenant's Uuid, through `quote_identifier`; the tenant id itself is bound.
        diesel::sql_query(format!("DELETE FROM {} WHERE tenant_id = $1", qualified(tier, tenant_id, table)))
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await?;
    }
    Ok(())
}

/// Deletes the tenant's rows in the shared tables (a pooled source after its cutover, or a
/// pooled target abandoned before it), in one transaction.
pub async fn clear_pooled(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin(connection, tenant_id).await?;
    let outcome = clear_in_transaction(connection, tenant_id, IsolationTier::Pooled).await;
    finish(connection, outcome).await
}

/// Brings `target` to `source`'s content inside the open transaction: rows new or changed
/// in the source are upserted (parents first), rows gone from it are deleted (children
/// first). Returns how many rows changed.
async fn sync_in_transaction(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
) -> QueryResult<usize> {
    let mut changed = 0;
    let mut shapes = Vec::new();
    for table in TENANT_SCHEMA_TABLES {
        shapes.push((*table, columns(connection, table).await?));
    }
    for (table, columns) in &shapes {
        let (source_table, target_table) = (qualified(source, tenant_id, table), qualified(target, tenant_id, table));
        let all = columns.all.join(", ");
        let updates =
            columns.all.iter().map(|column| format!("{column} = EXCLUDED.{column}")).collect::<Vec<_>>().join(", ");
        changed += diesel::sql_query(format!(
            "INSERT INTO {target_table} ({all})
             SELECT {source_all} FROM {source_table} s
             WHERE s.tenant_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM {target_table} t
                 WHERE t.tenant_id = $1 AND ({target_key}) = ({source_key})
                   AND ({target_all}) IS NOT DISTINCT FROM ({source_all}))
             ON CONFLICT ({key}) DO UPDATE SET {updates}",
            source_all = list("s", &columns.all),
            target_all = list("t", &columns.all),
            source_key = list("s", &columns.key),
            target_key = list("t", &columns.key),
            key = columns.key.join(", "),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .execute(connection)
        .await?;
    }
    for (table, columns) in shapes.iter().rev() {
        let (source_table, target_table) = (qualified(source, tenant_id, table), qualified(target, tenant_id, table));
        changed += diesel::sql_query(format!(
            "DELETE FROM {target_table} t WHERE t.tenant_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM {source_table} s WHERE s.tenant_id = $1 AND ({source_key}) = ({target_key}))",
            source_key = list("s", &columns.key),
            target_key = list("t", &columns.key),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .execute(connection)
        .await?;
    }
    Ok(changed)
}

/// One catch-up round: [`sync_in_transaction`] in a transaction of its own, while writes
/// continue on the source. Returns how many rows changed.
pub async fn catch_up(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
) -> QueryResult<usize> {
    begin(connection, tenant_id).await?;
    let outcome = sync_in_transaction(connection, tenant_id, source, target).await;
    finish(connection, outcome).await
}

#[derive(diesel::QueryableByName)]
struct CheckRow {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = Text)]
    hash: String,
}

/// Row counts and content hashes of every moving table on `tier`, inside the open transaction.
async fn checks_in_transaction(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    tier: IsolationTier,
) -> QueryResult<Vec<TableCheck>> {
    let mut checks = Vec::new();
    for table in TENANT_SCHEMA_TABLES {
        let columns = columns(connection, table).await?;
        let row: CheckRow = diesel::sql_query(format!(
            "SELECT count(*) AS rows,
                    coalesce(sum(hashtextextended(ROW({all})::text, 0)), 0)::text AS hash
             FROM {} t WHERE t.tenant_id = $1",
            qualified(tier, tenant_id, table),
            all = list("t", &columns.all),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .get_result(connection)
        .await?;
        checks.push(TableCheck { table: (*table).to_owned(), rows: row.rows, hash: row.hash });
    }
    Ok(checks)
}

/// What [`cut_over`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutOver {
    /// The target matched the source and the tenant now lives on the target tier; the
    /// operation's phase is `next_phase`. The checks are the verified tables.
    Done(Vec<TableCheck>),
    /// The verification found a difference (source checks, target checks): nothing changed.
    Mismatch(Vec<TableCheck>, Vec<TableCheck>),
    /// The operation is no longer this worker's: nothing changed.
    LeaseLost,
}

/// The cutover, in one transaction: takes the tenant's move lock exclusively (every write
/// transaction of the tenant takes it shared first, see `tenantd_route_write`, so in-flight
/// writes finish and new ones wait), brings the target up to date, verifies row counts and
/// content hashes of every table on both tiers, switches `tenants.isolation_tier` and records
/// `next_phase` on the operation (still held by `owner`). Writes that waited then run
/// against the target. A crash before COMMIT changes nothing; after it, the tenant lives on
/// the target and the operation resumes from `next_phase`.
pub async fn cut_over(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
    operation: (Uuid, Uuid),
    next_phase: &str,
) -> QueryResult<CutOver> {
    begin_as(connection, tenant_id, "READ COMMITTED").await?;
    let outcome = async {
        diesel::sql_query("SELECT pg_advisory_xact_lock(tenantd_move_lock_key($1))::text")
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await?;
        sync_in_transaction(connection, tenant_id, source, target).await?;
        let source_checks = checks_in_transaction(connection, tenant_id, source).await?;
        let target_checks = checks_in_transaction(connection, tenant_id, target).await?;
        if source_checks != target_checks {
            return Ok(CutOver::Mismatch(source_checks, target_checks));
        }
        diesel::sql_query(
            "UPDATE tenants SET isolation_tier = $2, revision = revision + 1, update_time = now() WHERE id = $1",
        )
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(target.as_str())
        .execute(connection)
        .await?;
        let (operation_id, owner) = operation;
        let recorded = diesel::sql_query(
            "UPDATE operations SET phase = $3, update_time = now()
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND lease_expire_time > now()",
        )
        .bind::<SqlUuid, _>(operation_id)
        .bind::<SqlUuid, _>(owner)
        .bind::<Text, _>(next_phase)
        .execute(connection)
        .await?;
        if recorded != 1 {
            return Ok(CutOver::LeaseLost);
        }
        Ok(CutOver::Done(target_checks))
    }
    .await;
    match outcome {
        Ok(CutOver::Done(checks)) => finish(connection, Ok(CutOver::Done(checks))).await,
        Ok(other) => {
            connection.batch_execute("ROLLBACK").await?;
            Ok(other)
        }
        Err(error) => finish(connection, Err(error)).await,
    }
}
