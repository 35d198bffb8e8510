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

use super::audit::NewAuditEvent;
use super::tenant_schema::{
    IsolationTier, OwnerTransaction, TENANT_SCHEMA_TABLES, begin_as_owner, finish, quote_identifier, schema_name,
};

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

/// Begins a move's transaction as `tenantd_owner`, scoped to `tenant_id`, in one snapshot
/// for every table, so copied rows satisfy their foreign keys. (The cutover begins read
/// committed: its statements must each see every write committed before the move lock was
/// granted.)
async fn begin(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin_as_owner(connection, OwnerTransaction::RepeatableRead, Some(tenant_id)).await
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

/// What a catch-up round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// The round changed more rows than the caller's bound: catch up again.
    Changing(usize),
    /// The round changed at most the bound, and in the round's snapshot the target then held
    /// exactly the source's rows (row counts and content hashes of every table, verified).
    /// Every row written to the source after that snapshot carries a transaction id at or
    /// above the snapshot's xmin, which is what the cutover syncs and verifies.
    Settled {
        /// Rows the round changed.
        changed: usize,
        /// The snapshot's horizon and verified tables.
        settled: Settled,
    },
    /// The verification in the round's snapshot found a difference (source checks, target
    /// checks): a bug, not a race, since both were read in one snapshot.
    Mismatch(Vec<TableCheck>, Vec<TableCheck>),
}

#[derive(diesel::QueryableByName)]
struct HorizonRow {
    #[diesel(sql_type = BigInt)]
    horizon: i64,
}

/// One catch-up round, in one repeatable-read snapshot, while writes continue on the source:
/// [`sync_in_transaction`]; then, if it changed at most `settled_rows` rows, the full
/// verification (row count and content hash of every table on both tiers) in the same
/// snapshot, so that the cutover only has to deal with what was written after it.
pub async fn catch_up(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
    settled_rows: usize,
) -> QueryResult<CatchUp> {
    begin(connection, tenant_id).await?;
    let outcome = async {
        // The first statement takes the transaction's snapshot: the horizon is its xmin.
        let horizon: HorizonRow =
            diesel::sql_query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon")
                .get_result(connection)
                .await?;
        let changed = sync_in_transaction(connection, tenant_id, source, target).await?;
        if changed > settled_rows {
            return Ok(CatchUp::Changing(changed));
        }
        let source_checks = checks_in_transaction(connection, tenant_id, source).await?;
        let target_checks = checks_in_transaction(connection, tenant_id, target).await?;
        if source_checks != target_checks {
            return Ok(CatchUp::Mismatch(source_checks, target_checks));
        }
        Ok(CatchUp::Settled { changed, settled: Settled { horizon: horizon.horizon, checks: target_checks } })
    }
    .await;
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

/// A condition on a source row (aliased `s`) that holds for every row version written by a
/// transaction at or above the horizon `$2`. `age(xmin)` is how many transaction ids ago the
/// row's writer got its (32-bit) id, counted from one point fixed for the whole transaction,
/// so it is compared with the age of the horizon's low 32 bits from the same point: a writer
/// at or above the horizon is at most as old. Ids are compared within 2^31 of each other, as
/// PostgreSQL itself compares them (the cutover runs within minutes of the horizon); a frozen
/// row has the largest age and never passes; a row that passes by mistake is only synced
/// again, which is harmless.
const WRITTEN_SINCE_HORIZON: &str = "age(s.xmin) <= age(($2 % 4294967296)::text::xid)";

#[derive(diesel::QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    inserted: i64,
    #[diesel(sql_type = Text)]
    hash: String,
}

#[derive(diesel::QueryableByName)]
struct SourceRow {
    #[diesel(sql_type = BigInt)]
    rows: i64,
    #[diesel(sql_type = BigInt)]
    changed: i64,
    #[diesel(sql_type = Text)]
    changed_hash: String,
}

#[derive(diesel::QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// What the cutover verified of one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CutOverCheck {
    /// The table.
    pub table: String,
    /// Its rows of the tenant on both tiers (equal).
    pub rows: i64,
    /// Rows written since the settled catch-up's snapshot, synced and compared by hash.
    pub changed_rows: i64,
}

/// The target's state in the settled catch-up's snapshot ([`CatchUp::Settled`]), which the
/// cutover starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// `pg_snapshot_xmin` of the snapshot, as a 64-bit transaction id.
    pub horizon: i64,
    /// Row counts and content hashes of every table in the snapshot (both tiers equal).
    pub checks: Vec<TableCheck>,
}

/// The cutover's share of the work, under the move lock, inside the open read-committed
/// transaction; `settled` is the last catch-up's verified snapshot. Per table (parents first):
/// the source rows written since the horizon are upserted into the target, which returns
/// what it now holds for them (count, new keys, content hash); one scan of the source counts
/// its rows and hashes those written since the horizon; where the target would then hold
/// more rows than the source (rows went from the source since), they are found by key and
/// deleted, and the target counted. Verified: the source's and the target's row counts, and
/// the content hash of the rows written since the horizon on both tiers.
///
/// Why that proves the tiers equal: the settled catch-up verified, in one snapshot whose
/// xmin is the horizon, that the target held exactly the source's rows, and only the move
/// writes to the target. A source row unchanged since that snapshot was in it, so it is in
/// the target unchanged; a row written since is upserted and compared here. So every source
/// row is in the target, and equal counts leave no room for an extra one. The work is two
/// passes over the tenant's rows' `xmin` in the source (no join, no hash of unchanged rows)
/// plus work proportional to the rows written since the snapshot: not a comparison of every
/// row. (Children-first deletes are not needed: a row gone from a parent took its children
/// with it in the source, and their rows are counted and deleted in their own table first.)
///
/// Returns the verified tables, or the tables that differ (source, target; a hash is over
/// the rows written since the horizon).
async fn sync_changed_in_transaction(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
    settled: &Settled,
) -> QueryResult<Result<Vec<CutOverCheck>, (Vec<TableCheck>, Vec<TableCheck>)>> {
    let mut shapes = Vec::new();
    for table in TENANT_SCHEMA_TABLES {
        shapes.push((*table, columns(connection, table).await?));
    }
    let mut written = Vec::new();
    for (table, columns) in &shapes {
        let all = columns.all.join(", ");
        let updates =
            columns.all.iter().map(|column| format!("{column} = EXCLUDED.{column}")).collect::<Vec<_>>().join(", ");
        let row: WrittenRow = diesel::sql_query(format!(
            "WITH written AS (
                 INSERT INTO {target_table} ({all})
                 SELECT {source_all} FROM {source_table} s WHERE s.tenant_id = $1 AND {WRITTEN_SINCE_HORIZON}
                 ON CONFLICT ({key}) DO UPDATE SET {updates}
                 RETURNING hashtextextended(ROW({all})::text, 0) AS hash, xmax = 0 AS inserted)
             SELECT count(*) AS rows, count(*) FILTER (WHERE inserted) AS inserted,
                    coalesce(sum(hash), 0)::text AS hash
             FROM written",
            target_table = qualified(target, tenant_id, table),
            source_table = qualified(source, tenant_id, table),
            source_all = list("s", &columns.all),
            key = columns.key.join(", "),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<BigInt, _>(settled.horizon)
        .get_result(connection)
        .await?;
        written.push(row);
    }
    // Counted children first, so that a deleted parent's rows are gone from the child
    // tables before the parent's own row is deleted.
    let mut target_rows = vec![0; shapes.len()];
    let mut source_rows = Vec::new();
    for (index, (table, columns)) in shapes.iter().enumerate().rev() {
        let (source_table, target_table) = (qualified(source, tenant_id, table), qualified(target, tenant_id, table));
        let at_snapshot = settled.checks.iter().find(|check| check.table == *table).map_or(0, |check| check.rows);
        let source_row: SourceRow = diesel::sql_query(format!(
            "SELECT count(*) AS rows, count(*) FILTER (WHERE {WRITTEN_SINCE_HORIZON}) AS changed,
                    coalesce(sum(hashtextextended(ROW({source_all})::text, 0))
                        FILTER (WHERE {WRITTEN_SINCE_HORIZON}), 0)::text AS changed_hash
             FROM {source_table} s WHERE s.tenant_id = $1",
            source_all = list("s", &columns.all),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<BigInt, _>(settled.horizon)
        .get_result(connection)
        .await?;
        let mut rows = at_snapshot + written[index].inserted;
        if rows != source_row.rows {
            // Some rows went from the source since the snapshot: find them by key, then count.
            diesel::sql_query(format!(
                "DELETE FROM {target_table} t WHERE t.tenant_id = $1 AND NOT EXISTS (
                     SELECT 1 FROM {source_table} s WHERE s.tenant_id = $1 AND ({source_key}) = ({target_key}))",
                source_key = list("s", &columns.key),
                target_key = list("t", &columns.key),
            ))
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await?;
            // A table name cannot be a bind parameter: `target_table` is one of
            // TENANT_SCHEMA_TABLES, qualified through `quote_identifier`; the tenant is bound.
            let counted: CountRow =
                diesel::sql_query(format!("SELECT count(*) AS rows FROM {target_table} WHERE tenant_id = $1"))
                    .bind::<SqlUuid, _>(tenant_id)
                    .get_result(connection)
                    .await?;
            rows = counted.rows;
        }
        target_rows[index] = rows;
        source_rows.push(source_row);
    }
    source_rows.reverse();
    let (mut verified, mut source_checks, mut target_checks, mut differs) = (Vec::new(), Vec::new(), Vec::new(), false);
    for (index, (table, _)) in shapes.iter().enumerate() {
        let (source_row, written) = (&source_rows[index], &written[index]);
        differs |= source_row.rows != target_rows[index]
            || source_row.changed != written.rows
            || source_row.changed_hash != written.hash;
        let table = (*table).to_owned();
        source_checks.push(TableCheck {
            table: table.clone(),
            rows: source_row.rows,
            hash: source_row.changed_hash.clone(),
        });
        target_checks.push(TableCheck { table: table.clone(), rows: target_rows[index], hash: written.hash.clone() });
        verified.push(CutOverCheck { table, rows: target_rows[index], changed_rows: written.rows });
    }
    if differs {
        return Ok(Err((source_checks, target_checks)));
    }
    Ok(Ok(verified))
}

/// What [`cut_over`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutOver {
    /// The target matched the source and the tenant now lives on the target tier; the
    /// operation's phase is `next_phase`. The checks are the verified tables.
    Done(Vec<CutOverCheck>),
    /// The verification found a difference (source checks, target checks): nothing changed.
    /// A check's hash is over the rows written since the horizon.
    Mismatch(Vec<TableCheck>, Vec<TableCheck>),
    /// The operation is no longer this worker's: nothing changed.
    LeaseLost,
}

/// The cutover, in one transaction: takes the tenant's move lock exclusively (every write
/// transaction of the tenant takes it shared first, see `tenantd_route_write`, so in-flight
/// writes finish and new ones wait), syncs and verifies what was written since the `settled`
/// catch-up's snapshot ([`sync_changed_in_transaction`]), switches `tenants.isolation_tier`,
/// records `event` (the move's audit event, `tenant.tier_moved`) and `next_phase` on the operation (still held
/// by `owner`). Writes that waited then run against the target. A crash before COMMIT changes
/// nothing; after it, the tenant lives on the target and the operation resumes from
/// `next_phase`.
#[allow(clippy::too_many_arguments)]
pub async fn cut_over(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    source: IsolationTier,
    target: IsolationTier,
    settled: &Settled,
    operation: (Uuid, Uuid),
    next_phase: &str,
    event: NewAuditEvent<'_>,
) -> QueryResult<CutOver> {
    begin_as_owner(connection, OwnerTransaction::ReadCommitted, Some(tenant_id)).await?;
    let outcome = async {
        diesel::sql_query("SELECT pg_advisory_xact_lock(tenantd_move_lock_key($1))::text")
            .bind::<SqlUuid, _>(tenant_id)
            .execute(connection)
            .await?;
        let verified = match sync_changed_in_transaction(connection, tenant_id, source, target, settled).await? {
            Ok(verified) => verified,
            Err((source_checks, target_checks)) => return Ok(CutOver::Mismatch(source_checks, target_checks)),
        };
        diesel::sql_query(
            "UPDATE tenants SET isolation_tier = $2, revision = revision + 1, update_time = now() WHERE id = $1",
        )
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(target.as_str())
        .execute(connection)
        .await?;
        super::audit::insert_as_owner(connection, tenant_id, event).await?;
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
        Ok(CutOver::Done(verified))
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
