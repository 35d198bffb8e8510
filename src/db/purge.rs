//! The SQL of purging a tenant (decision 0020). The purge's functions take a connection of
//! the provisioning role and each runs its own short transaction as `tenantd_owner`, scoped
//! to the purged tenant with the same `SET LOCAL app.tenant_id` statement as the tenant
//! transaction, so row-level security still scopes every count and delete (defence in
//! depth: a bug here cannot reach another tenant's rows of a table with RLS).
//!
//! The tables are found in the catalog, never listed: every ordinary table with a
//! `tenant_id` column, in any schema but the system ones ([`tenant_tables`]), ordered
//! children before parents by their foreign keys ([`delete_order`]). Their names go into SQL
//! text through [`quote_identifier`]; values are bind parameters.

use std::collections::{BTreeMap, BTreeSet};

use diesel::QueryResult;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::Connection;
use super::tenant_schema::{OwnerTransaction, begin_as_owner, finish, quote_identifier, schema_name};

/// A table with a `tenant_id` column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, diesel::QueryableByName)]
pub struct TenantTable {
    /// Its schema.
    #[diesel(sql_type = Text)]
    pub schema: String,
    /// Its name.
    #[diesel(sql_type = Text)]
    pub name: String,
}

impl TenantTable {
    /// `schema.name`, as receipts name it.
    pub fn label(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    fn qualified(&self) -> String {
        format!("{}.{}", quote_identifier(&self.schema), quote_identifier(&self.name))
    }
}

/// What a PURGED tombstone keeps of a tenant's registry row: none of its names, labels or
/// plan (its id, tier and times stay). Shared with an import that puts a tombstone back.
pub const TOMBSTONE: &str = "slug = NULL, display_name = NULL, labels = '{}', plan = NULL, limit_overrides = '{}'";

/// The schemas that hold no tenant data: PostgreSQL's and Citus's own.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE 'citus%' AND n.nspname NOT LIKE 'columnar%'";

/// Every ordinary (or partitioned, not partition) table with a `tenant_id` column, in every
/// schema but the system ones, by schema and name.
pub async fn tenant_tables(connection: &mut AsyncPgConnection) -> QueryResult<Vec<TenantTable>> {
    diesel::sql_query(format!(
        "SELECT n.nspname::text AS schema, c.relname::text AS name
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS}
         ORDER BY 1, 2"
    ))
    .load(connection)
    .await
}

#[derive(diesel::QueryableByName)]
struct ForeignKey {
    #[diesel(sql_type = Text)]
    child_schema: String,
    #[diesel(sql_type = Text)]
    child: String,
    #[diesel(sql_type = Text)]
    parent_schema: String,
    #[diesel(sql_type = Text)]
    parent: String,
}

/// `tables` ordered so that a table comes before every table its rows reference (children
/// before parents, from pg_constraint), so each delete leaves no dangling reference.
/// Self-references are ignored; a cycle (there is none) would keep catalog order.
pub async fn delete_order(
    connection: &mut AsyncPgConnection,
    tables: Vec<TenantTable>,
) -> QueryResult<Vec<TenantTable>> {
    let keys: Vec<ForeignKey> = diesel::sql_query(
        "SELECT cn.nspname::text AS child_schema, c.relname::text AS child,
                pn.nspname::text AS parent_schema, p.relname::text AS parent
         FROM pg_constraint k
         JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
         JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE k.contype = 'f' AND k.conrelid <> k.confrelid",
    )
    .load(connection)
    .await?;
    let mut parents: BTreeMap<TenantTable, BTreeSet<TenantTable>> = BTreeMap::new();
    for key in keys {
        let child = TenantTable { schema: key.child_schema, name: key.child };
        let parent = TenantTable { schema: key.parent_schema, name: key.parent };
        parents.entry(parent).or_default().insert(child);
    }
    Ok(children_first(tables, &parents))
}

/// Orders `tables` children first, given each table's referencing tables.
fn children_first(
    mut remaining: Vec<TenantTable>,
    children: &BTreeMap<TenantTable, BTreeSet<TenantTable>>,
) -> Vec<TenantTable> {
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let ready = remaining.iter().position(|table| {
            children.get(table).is_none_or(|referencing| referencing.iter().all(|child| !remaining.contains(child)))
        });
        // A cycle: take the rest in catalog order.
        let next = ready.unwrap_or(0);
        ordered.push(remaining.remove(next));
    }
    ordered
}

/// Begins a purge's transaction as `tenantd_owner`, scoped to `tenant_id`.
async fn begin(connection: &mut AsyncPgConnection, tenant_id: Uuid, transaction: OwnerTransaction) -> QueryResult<()> {
    begin_as_owner(connection, transaction, Some(tenant_id)).await
}

/// The registry columns a purge reads.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct PurgedTenant {
    /// Its state.
    #[diesel(sql_type = Text)]
    pub state: String,
    /// `pooled` or `schema`.
    #[diesel(sql_type = Text)]
    pub isolation_tier: String,
}

/// A lifecycle change the purge makes, with its audit event.
#[derive(Debug, Clone)]
pub struct PurgeTransition<'a> {
    /// The state it must be in.
    pub from: &'a str,
    /// The state it gets.
    pub to: &'a str,
    /// The audit action.
    pub action: &'a str,
    /// `bootstrap`, `operator` or `platform`.
    pub actor_type: &'a str,
    /// The operator's id, `retention`, or empty.
    pub actor_id: &'a str,
    /// The operation's id (the request id of its events).
    pub request_id: &'a str,
}

/// Reads the tenant's state and tier, locking its row until the transaction ends.
async fn lock_tenant(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<Option<PurgedTenant>> {
    use diesel::OptionalExtension;
    diesel::sql_query("SELECT state, isolation_tier FROM tenants WHERE id = $1 FOR UPDATE")
        .bind::<SqlUuid, _>(tenant_id)
        .get_result(connection)
        .await
        .optional()
}

async fn audit(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    transition: &PurgeTransition<'_>,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO audit_events
             (tenant_id, id, actor_type, actor_id, action, resource_type, resource_id, request_id, details)
         VALUES ($1, $2, $3, $4, $5, 'tenant', $1::text, $6, jsonb_build_object('from', $7::text, 'to', $8::text))",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(transition.actor_type)
    .bind::<Text, _>(transition.actor_id)
    .bind::<Text, _>(transition.action)
    .bind::<Text, _>(transition.request_id)
    .bind::<Text, _>(transition.from)
    .bind::<Text, _>(transition.to)
    .execute(connection)
    .await
    .map(drop)
}

/// Locks the tenant's row and hands its state to `decide`, which answers whether to apply
/// `transition` (its `from` must then be the state); applies it with its audit event, in one
/// transaction. Returns the tenant as it was (`None`: no such tenant) and `decide`'s answer.
pub async fn start<E>(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    transition: &PurgeTransition<'_>,
    decide: impl FnOnce(&PurgedTenant) -> Result<bool, E>,
) -> QueryResult<Option<(PurgedTenant, Result<bool, E>)>> {
    begin(connection, tenant_id, OwnerTransaction::ReadCommitted).await?;
    let outcome = async {
        let Some(tenant) = lock_tenant(connection, tenant_id).await? else { return Ok(None) };
        let decision = decide(&tenant);
        if matches!(decision, Ok(true)) {
            diesel::sql_query(
                "UPDATE tenants SET state = $2, revision = revision + 1, update_time = now() WHERE id = $1",
            )
            .bind::<SqlUuid, _>(tenant_id)
            .bind::<Text, _>(transition.to)
            .execute(connection)
            .await?;
            audit(connection, tenant_id, transition).await?;
        }
        Ok(Some((tenant, decision)))
    }
    .await;
    finish(connection, outcome).await
}

/// Takes the tenant's move lock exclusively and lets go at once: every write transaction of
/// the tenant holds it shared from its start (`tenantd_route_write`), so once it is granted no
/// write admitted before the purge is still in flight.
pub async fn wait_for_writes(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<()> {
    begin(connection, tenant_id, OwnerTransaction::ReadCommitted).await?;
    let outcome = diesel::sql_query("SELECT pg_advisory_xact_lock(tenantd_move_lock_key($1))::text")
        .bind::<SqlUuid, _>(tenant_id)
        .execute(connection)
        .await
        .map(drop);
    finish(connection, outcome).await
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

async fn count_in(connection: &mut AsyncPgConnection, tenant_id: Uuid, table: &TenantTable) -> QueryResult<i64> {
    // A table name cannot be a bind parameter: it comes from the catalog, through
    // `quote_identifier`; the tenant id is bound.
    let count: Count =
        diesel::sql_query(format!("SELECT count(*) AS rows FROM {} WHERE tenant_id = $1", table.qualified()))
            .bind::<SqlUuid, _>(tenant_id)
            .get_result(connection)
            .await?;
    Ok(count.rows)
}

/// The platform idempotency records whose response is the tenant (a CreateTenant replay).
const PLATFORM_IDEMPOTENCY: &str = "public.platform_idempotency_records";

async fn count_platform_idempotency(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<i64> {
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS rows FROM platform_idempotency_records WHERE response ->> 'id' = $1::text",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(connection)
    .await?;
    Ok(count.rows)
}

/// The tables that can hold rows of `tenant_id`: those in `public` and in its own schema.
fn own(tables: Vec<TenantTable>, tenant_id: Uuid) -> Vec<TenantTable> {
    let schema = schema_name(tenant_id);
    tables.into_iter().filter(|table| table.schema == "public" || table.schema == schema).collect()
}

/// The tenant's rows per table (`schema.table`), counted in one snapshot: every table with a
/// `tenant_id` column in `public` and in the tenant's schema, and the platform idempotency
/// records that replay its creation.
pub async fn count(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<BTreeMap<String, i64>> {
    begin(connection, tenant_id, OwnerTransaction::RepeatableReadReadOnly).await?;
    let outcome = async {
        let mut counts = BTreeMap::new();
        for table in own(tenant_tables(connection).await?, tenant_id) {
            counts.insert(table.label(), count_in(connection, tenant_id, &table).await?);
        }
        counts.insert(PLATFORM_IDEMPOTENCY.to_owned(), count_platform_idempotency(connection, tenant_id).await?);
        Ok(counts)
    }
    .await;
    finish(connection, outcome).await
}

/// The tables a purge deletes from, children first: those of [`count`] but the tenant's own
/// schema, which is dropped whole.
pub async fn tables_to_delete(connection: &mut AsyncPgConnection) -> QueryResult<Vec<TenantTable>> {
    let tables = tenant_tables(connection).await?.into_iter().filter(|table| table.schema == "public").collect();
    delete_order(connection, tables).await
}

/// The columns of `table`'s primary key after `tenant_id`, in key order: the keyset a purge
/// deletes by (every tenant table's key starts `(tenant_id, ...)`). Empty: the key is
/// `tenant_id` alone or the table has none, and [`delete_batch`] deletes in one statement.
pub async fn key_columns(connection: &mut AsyncPgConnection, table: &TenantTable) -> QueryResult<Vec<String>> {
    #[derive(diesel::QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT a.attname::text AS name
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])
         WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2 AND a.attname <> 'tenant_id'
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind::<Text, _>(&table.schema)
    .bind::<Text, _>(&table.name)
    .load(connection)
    .await?;
    Ok(columns.into_iter().map(|column| column.name).collect())
}

/// One batch of [`delete_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows deleted.
    pub deleted: usize,
    /// The key of the batch's last row (a JSON object of the key columns), where the next
    /// batch starts; `None`: the table has no row of the tenant left after the cursor.
    pub last: Option<serde_json::Value>,
}

#[derive(diesel::QueryableByName)]
struct LastKey {
    #[diesel(sql_type = Jsonb)]
    key: serde_json::Value,
}

/// Deletes the tenant's next at most `limit` rows of `table` by its primary key `key` (from
/// [`key_columns`]), after the key `after` (the previous batch's [`Batch::last`]; `None`:
/// from the start), in a transaction of its own. Two statements, each with `tenant_id = $1`
/// (so Citus routes both to the tenant's shard): the batch's last key, `ORDER BY key LIMIT
/// n`, then a range delete `key > after AND key <= last` on the primary key index, so a
/// batch never walks the dead index entries of the batches before it. The key values cross
/// as JSON and come back typed by `jsonb_populate_record` of the table's own row type (no
/// type name enters SQL text).
pub async fn delete_batch(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    table: &TenantTable,
    key: &[String],
    after: Option<&serde_json::Value>,
    limit: i64,
) -> QueryResult<Batch> {
    begin(connection, tenant_id, OwnerTransaction::ReadCommitted).await?;
    let outcome = async {
        // Table and column names cannot be bind parameters: they come from the catalog, each
        // through `quote_identifier`; the tenant id, the limit and the key values are bound.
        let qualified = table.qualified();
        if key.is_empty() {
            let deleted = diesel::sql_query(format!("DELETE FROM {qualified} WHERE tenant_id = $1"))
                .bind::<SqlUuid, _>(tenant_id)
                .execute(connection)
                .await?;
            return Ok(Batch { deleted, last: None });
        }
        let columns = |alias: &str, suffix: &str| {
            key.iter()
                .map(|column| format!("{alias}{}{suffix}", quote_identifier(column)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key_row = format!("({})", columns("t.", ""));
        let bound = |parameter: &str| {
            format!(
                "(SELECT {} FROM jsonb_populate_record(NULL::{qualified}, {parameter}::jsonb) AS k)",
                columns("k.", "")
            )
        };
        // `$3` is bound either way, so both statements keep one parameter list.
        let after_condition = match after {
            Some(_) => format!("AND {key_row} > {}", bound("$3")),
            None => "AND $3::jsonb IS NULL".to_owned(),
        };
        let last: Option<LastKey> = {
            use diesel::OptionalExtension;
            diesel::sql_query(format!(
                "SELECT to_jsonb(b) AS key FROM
                     (SELECT {ascending} FROM {qualified} AS t WHERE t.tenant_id = $1 {after_condition}
                      ORDER BY {ascending} LIMIT $2) AS b
                 ORDER BY {descending} LIMIT 1",
                ascending = columns("t.", ""),
                descending = columns("", " DESC"),
            ))
            .bind::<SqlUuid, _>(tenant_id)
            .bind::<BigInt, _>(limit)
            .bind::<Nullable<Jsonb>, _>(after.cloned())
            .get_result(connection)
            .await
            .optional()?
        };
        let Some(last) = last else { return Ok(Batch { deleted: 0, last: None }) };
        let deleted = diesel::sql_query(format!(
            "DELETE FROM {qualified} AS t WHERE t.tenant_id = $1 {after_condition} AND {key_row} <= {}",
            bound("$2"),
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Jsonb, _>(last.key.clone())
        .bind::<Nullable<Jsonb>, _>(after.cloned())
        .execute(connection)
        .await?;
        Ok(Batch { deleted, last: Some(last.key) })
    }
    .await;
    finish(connection, outcome).await
}

/// Deletes the platform idempotency records that replay the tenant's creation (their response
/// is the tenant, slug and display name included).
pub async fn delete_platform_idempotency(connection: &mut AsyncPgConnection, tenant_id: Uuid) -> QueryResult<usize> {
    begin(connection, tenant_id, OwnerTransaction::ReadCommitted).await?;
    let outcome = diesel::sql_query("DELETE FROM platform_idempotency_records WHERE response ->> 'id' = $1::text")
        .bind::<SqlUuid, _>(tenant_id)
        .execute(connection)
        .await;
    finish(connection, outcome).await
}

/// What [`verify_and_finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Nothing of the tenant was left; it is PURGED and its receipt stored. The number of
    /// tables scanned.
    Done(usize),
    /// Rows were found (per `schema.table`): nothing changed.
    RowsLeft(BTreeMap<String, i64>),
    /// The operation is no longer this worker's: nothing changed.
    LeaseLost,
}

/// The receipt [`verify_and_finish`] stores.
#[derive(Debug, Clone)]
pub struct NewReceipt<'a> {
    /// The purge operation.
    pub operation_id: Uuid,
    /// Who purged (`bootstrap`, `operator:<id>`, `retention`).
    pub purged_by: &'a str,
    /// The tier the tenant was on.
    pub isolation_tier: &'a str,
    /// When the purge started.
    pub start_time: chrono::DateTime<chrono::Utc>,
    /// Rows removed per table.
    pub removed_rows: serde_json::Value,
    /// What was done in Redis.
    pub redis: serde_json::Value,
}

/// In one transaction: scans every table with a `tenant_id` column in every schema (the
/// catalog's list, taken now) and the platform idempotency records for rows of the tenant;
/// if there are none, makes the tenant a tombstone (PURGED: slug, display name and plan
/// cleared, labels and overrides emptied, `purge_time` set), records `transition`'s audit
/// event (the only row of the tenant left, so that watchers see the purge), stores the
/// receipt and records `next_phase` on the operation (still held by `owner`).
pub async fn verify_and_finish(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
    transition: &PurgeTransition<'_>,
    receipt: &NewReceipt<'_>,
    owner: Uuid,
    next_phase: &str,
) -> QueryResult<Finished> {
    begin(connection, tenant_id, OwnerTransaction::RepeatableRead).await?;
    let outcome = async {
        let tables = tenant_tables(connection).await?;
        let mut left = BTreeMap::new();
        let mut scanned = Vec::new();
        for table in &tables {
            let rows = count_in(connection, tenant_id, table).await?;
            if rows != 0 {
                left.insert(table.label(), rows);
            }
            scanned.push(table.label());
        }
        let idempotency = count_platform_idempotency(connection, tenant_id).await?;
        if idempotency != 0 {
            left.insert(PLATFORM_IDEMPOTENCY.to_owned(), idempotency);
        }
        scanned.push(PLATFORM_IDEMPOTENCY.to_owned());
        if !left.is_empty() {
            return Ok(Finished::RowsLeft(left));
        }
        diesel::sql_query(format!(
            "UPDATE tenants SET state = $2, {TOMBSTONE}, purge_time = now(), revision = revision + 1,
                 update_time = now()
             WHERE id = $1"
        ))
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(transition.to)
        .execute(connection)
        .await?;
        audit(connection, tenant_id, transition).await?;
        let scanned_count = scanned.len();
        let verification = serde_json::json!({
            "tables_scanned": scanned.len(),
            "rows_found": 0,
            "tables": scanned,
            "kept": {
                "public.audit_events": "the tenant.purge event, written after the scan",
                "public.event_transactions": "the index row of that event's transaction",
            },
        });
        diesel::sql_query(
            "INSERT INTO tenant_purge_receipts
                 (operation_id, subject_tenant_id, purged_by, isolation_tier, start_time, removed_rows, redis,
                  verification)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (operation_id) DO NOTHING",
        )
        .bind::<SqlUuid, _>(receipt.operation_id)
        .bind::<SqlUuid, _>(tenant_id)
        .bind::<Text, _>(receipt.purged_by)
        .bind::<Text, _>(receipt.isolation_tier)
        .bind::<Timestamptz, _>(receipt.start_time)
        .bind::<Jsonb, _>(receipt.removed_rows.clone())
        .bind::<Jsonb, _>(receipt.redis.clone())
        .bind::<Jsonb, _>(verification)
        .execute(connection)
        .await?;
        let recorded = diesel::sql_query(
            "UPDATE operations SET phase = $3, update_time = now()
             WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND lease_expire_time > now()",
        )
        .bind::<SqlUuid, _>(receipt.operation_id)
        .bind::<SqlUuid, _>(owner)
        .bind::<Text, _>(next_phase)
        .execute(connection)
        .await?;
        if recorded != 1 {
            return Ok(Finished::LeaseLost);
        }
        Ok(Finished::Done(scanned_count))
    }
    .await;
    match outcome {
        Ok(Finished::Done(scanned)) => finish(connection, Ok(Finished::Done(scanned))).await,
        Ok(other) => {
            connection.batch_execute("ROLLBACK").await?;
            Ok(other)
        }
        Err(error) => finish(connection, Err(error)).await,
    }
}

/// A stored purge receipt.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ReceiptRow {
    /// The purge operation.
    #[diesel(sql_type = SqlUuid)]
    pub operation_id: Uuid,
    /// The purged tenant.
    #[diesel(sql_type = SqlUuid)]
    pub subject_tenant_id: Uuid,
    /// Who purged.
    #[diesel(sql_type = Text)]
    pub purged_by: String,
    /// The tier it was on.
    #[diesel(sql_type = Text)]
    pub isolation_tier: String,
    /// When the purge started.
    #[diesel(sql_type = Timestamptz)]
    pub start_time: chrono::DateTime<chrono::Utc>,
    /// When it finished.
    #[diesel(sql_type = Timestamptz)]
    pub finish_time: chrono::DateTime<chrono::Utc>,
    /// Rows removed per table.
    #[diesel(sql_type = Jsonb)]
    pub removed_rows: serde_json::Value,
    /// What was done in Redis.
    #[diesel(sql_type = Jsonb)]
    pub redis: serde_json::Value,
    /// The verification.
    #[diesel(sql_type = Jsonb)]
    pub verification: serde_json::Value,
}

/// The latest receipt of a tenant (a tenant restored and purged again has several).
pub async fn latest_receipt(connection: &mut Connection<'_>, tenant_id: Uuid) -> QueryResult<Option<ReceiptRow>> {
    use diesel::OptionalExtension;
    diesel::sql_query(
        "SELECT operation_id, subject_tenant_id, purged_by, isolation_tier, start_time, finish_time, removed_rows,
                redis, verification
         FROM tenant_purge_receipts WHERE subject_tenant_id = $1 ORDER BY finish_time DESC, operation_id DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .get_result(connection)
    .await
    .optional()
}

/// [`latest_receipt`] on the purge's connection of the provisioning role (which reads it as
/// `tenantd_owner`, in a read-only transaction of its own).
pub async fn latest_receipt_as_owner(
    connection: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> QueryResult<Option<ReceiptRow>> {
    begin(connection, tenant_id, OwnerTransaction::ReadCommittedReadOnly).await?;
    let outcome = {
        let mut shared: &AsyncPgConnection = connection;
        latest_receipt(&mut shared, tenant_id).await
    };
    finish(connection, outcome).await
}

/// The deleted tenants whose delete time is more than `retention_ms` ago and that no
/// unfinished operation acts on, oldest first, at most `limit`.
pub async fn due_for_purge(connection: &mut Connection<'_>, retention_ms: i64, limit: i64) -> QueryResult<Vec<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let rows: Vec<Due> = diesel::sql_query(
        "SELECT t.id FROM tenants t
         WHERE t.state = 'deleted' AND t.delete_time < now() - make_interval(secs => $1::double precision / 1000)
           AND NOT EXISTS (SELECT 1 FROM operations o
                           WHERE o.subject_tenant_id = t.id AND o.state IN ('pending', 'running'))
         ORDER BY t.delete_time LIMIT $2",
    )
    .bind::<BigInt, _>(retention_ms)
    .bind::<BigInt, _>(limit)
    .load(connection)
    .await?;
    Ok(rows.into_iter().map(|row| row.id).collect())
}

/// The id of the newest operation of `kind` on the tenant (`None`: none is stored).
pub async fn latest_operation(
    connection: &mut Connection<'_>,
    tenant_id: Uuid,
    kind: &str,
) -> QueryResult<Option<Uuid>> {
    use diesel::OptionalExtension;
    #[derive(diesel::QueryableByName)]
    struct Latest {
        #[diesel(sql_type = Nullable<SqlUuid>)]
        id: Option<Uuid>,
    }
    let row: Option<Latest> = diesel::sql_query(
        "SELECT id FROM operations WHERE subject_tenant_id = $1 AND kind = $2 ORDER BY create_time DESC, id DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(tenant_id)
    .bind::<Text, _>(kind)
    .get_result(connection)
    .await
    .optional()?;
    Ok(row.and_then(|row| row.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TenantTable {
        TenantTable { schema: "public".to_owned(), name: name.to_owned() }
    }

    #[test]
    fn children_come_before_the_tables_they_reference() {
        let mut children = BTreeMap::new();
        children.insert(table("users"), BTreeSet::from([table("documents")]));
        children.insert(table("documents"), BTreeSet::from([table("comments")]));
        let ordered = children_first(vec![table("users"), table("documents"), table("comments")], &children);
        assert_eq!(ordered, vec![table("comments"), table("documents"), table("users")]);
    }
}
