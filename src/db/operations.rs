//! Repository of the global `operations` table: long-running operations and their leases.
//! Functions take a connection; an operation belongs to the platform, not to a tenant.
//!
//! A worker owns an operation while its lease (`lease_owner`, `lease_expire_time`) is
//! current: every write a worker makes is conditional on still owning it, so a worker whose
//! lease expired (it stalled, or lost its database) cannot overwrite the work of the worker
//! that claimed the operation after it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Connection;
use super::schema::operations;

/// The states of an unfinished operation.
const UNFINISHED: [&str; 2] = ["pending", "running"];

/// A stored operation.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = operations, check_for_backend(diesel::pg::Pg))]
pub struct OperationRow {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// What the operation does, e.g. `move_tenant`.
    pub kind: String,
    /// The tenant it acts on, if any.
    pub subject_tenant_id: Option<Uuid>,
    /// The validated request, as the kind's handler reads it.
    pub request: serde_json::Value,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// The current phase, named by the kind's handler.
    pub phase: String,
    /// `{"percent": 0..100, "details": {...}}`, as the kind's handler reports it.
    pub progress: serde_json::Value,
    /// Whether a caller asked for cancellation.
    pub cancel_requested: bool,
    /// Once done, `{"response": ...}` or `{"error": {"code", "reason", "message"}}`.
    pub result: Option<serde_json::Value>,
    /// The worker holding the lease.
    pub lease_owner: Option<Uuid>,
    /// When the lease ends unless renewed.
    pub lease_expire_time: Option<DateTime<Utc>>,
    /// How many times a worker claimed it.
    pub attempts: i32,
    /// Who started it: `bootstrap` or `operator:<id>`.
    pub created_by: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// When it ended.
    pub done_time: Option<DateTime<Utc>>,
}

/// An operation to insert (pending).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = operations)]
pub struct NewOperationRow<'a> {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Kind.
    pub kind: &'a str,
    /// The tenant it acts on.
    pub subject_tenant_id: Option<Uuid>,
    /// The request.
    pub request: serde_json::Value,
    /// The phase it starts in.
    pub phase: &'a str,
    /// Who started it.
    pub created_by: &'a str,
}

/// How an operation ended.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Succeeded with this response.
    #[serde(rename = "response")]
    Succeeded(serde_json::Value),
    /// Failed or was cancelled (`state`) with this code, reason and message.
    Error {
        /// `failed` or `cancelled`.
        #[serde(skip)]
        state: &'static str,
        /// gRPC code.
        code: i32,
        /// ErrorInfo reason.
        reason: String,
        /// Message for the caller.
        message: String,
    },
}

/// Inserts an operation.
pub async fn insert(connection: &mut Connection<'_>, row: NewOperationRow<'_>) -> QueryResult<OperationRow> {
    diesel::insert_into(operations::table)
        .values(row)
        .returning(OperationRow::as_returning())
        .get_result(connection)
        .await
}

/// Finds an operation.
pub async fn find(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<Option<OperationRow>> {
    operations::table.find(id).select(OperationRow::as_select()).first(connection).await.optional()
}

/// One page of operations, newest first, optionally of one tenant, before a cursor.
pub async fn list(
    connection: &mut Connection<'_>,
    tenant_id: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<OperationRow>> {
    let mut query =
        operations::table.select(OperationRow::as_select()).order(operations::id.desc()).limit(limit).into_boxed();
    if let Some(tenant_id) = tenant_id {
        query = query.filter(operations::subject_tenant_id.eq(tenant_id));
    }
    if let Some(before) = before {
        query = query.filter(operations::id.lt(before));
    }
    query.load(connection).await
}

/// Asks an unfinished operation to stop. A pending operation that no worker holds ends at
/// once (it has done nothing); a running one is flagged and its worker stops at its next
/// checkpoint. Returns the operation as it now is (`None`: unknown id).
pub async fn request_cancel(
    connection: &mut Connection<'_>,
    id: Uuid,
    reason: &str,
    message: &str,
) -> QueryResult<Option<OperationRow>> {
    let result = serde_json::json!({
        "error": {"code": tonic_code(tonic::Code::Cancelled), "reason": reason, "message": message}
    });
    let ended = diesel::update(
        operations::table.find(id).filter(operations::state.eq("pending")).filter(operations::lease_owner.is_null()),
    )
    .set((
        operations::state.eq("cancelled"),
        operations::cancel_requested.eq(true),
        operations::result.eq(result),
        operations::done_time.eq(diesel::dsl::now),
        operations::update_time.eq(diesel::dsl::now),
    ))
    .returning(OperationRow::as_returning())
    .get_result(connection)
    .await
    .optional()?;
    if ended.is_some() {
        return Ok(ended);
    }
    let flagged = diesel::update(operations::table.find(id).filter(operations::state.eq_any(UNFINISHED)))
        .set((operations::cancel_requested.eq(true), operations::update_time.eq(diesel::dsl::now)))
        .returning(OperationRow::as_returning())
        .get_result(connection)
        .await
        .optional()?;
    match flagged {
        Some(row) => Ok(Some(row)),
        None => find(connection, id).await,
    }
}

/// Deletes a finished operation; `false` if it is unknown or unfinished.
pub async fn delete_finished(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<bool> {
    let deleted = diesel::delete(operations::table.find(id).filter(operations::done_time.is_not_null()))
        .execute(connection)
        .await?;
    Ok(deleted == 1)
}

/// Claims the oldest unfinished operation of one of `kinds` whose lease is free or expired,
/// for `owner`, for `lease_ms`; `None` if there is none. Concurrent claimers skip each
/// other's rows (`FOR UPDATE SKIP LOCKED`), so an operation has one owner at a time.
pub async fn claim(
    connection: &mut Connection<'_>,
    owner: Uuid,
    kinds: &[&str],
    lease_ms: i64,
) -> QueryResult<Option<OperationRow>> {
    diesel::sql_query(
        "UPDATE operations
         SET state = 'running', lease_owner = $1,
             lease_expire_time = now() + $2 * interval '1 millisecond',
             attempts = attempts + 1, update_time = now()
         WHERE id = (
             SELECT id FROM operations
             WHERE state IN ('pending', 'running') AND kind = ANY ($3)
               AND (lease_expire_time IS NULL OR lease_expire_time < now())
             ORDER BY create_time, id
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING *",
    )
    .bind::<sql_types::Uuid, _>(owner)
    .bind::<sql_types::BigInt, _>(lease_ms)
    .bind::<sql_types::Array<sql_types::Text>, _>(kinds)
    .get_result(connection)
    .await
    .optional()
}

/// Extends `owner`'s lease; returns whether cancellation was requested, or `None` if
/// `owner` no longer holds the operation (it must stop).
pub async fn renew(connection: &mut Connection<'_>, id: Uuid, owner: Uuid, lease_ms: i64) -> QueryResult<Option<bool>> {
    #[derive(QueryableByName)]
    struct Renewed {
        #[diesel(sql_type = sql_types::Bool)]
        cancel_requested: bool,
    }
    let renewed: Option<Renewed> = diesel::sql_query(
        "UPDATE operations SET lease_expire_time = now() + $3 * interval '1 millisecond'
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'
         RETURNING cancel_requested",
    )
    .bind::<sql_types::Uuid, _>(id)
    .bind::<sql_types::Uuid, _>(owner)
    .bind::<sql_types::BigInt, _>(lease_ms)
    .get_result(connection)
    .await
    .optional()?;
    Ok(renewed.map(|renewed| renewed.cancel_requested))
}

/// Records `owner`'s progress; returns whether cancellation was requested, or `None` if
/// `owner` no longer holds the operation.
pub async fn record_progress(
    connection: &mut Connection<'_>,
    id: Uuid,
    owner: Uuid,
    phase: &str,
    progress: serde_json::Value,
) -> QueryResult<Option<bool>> {
    diesel::update(owned(id, owner))
        .set((
            operations::phase.eq(phase),
            operations::progress.eq(progress),
            operations::update_time.eq(diesel::dsl::now),
        ))
        .returning(operations::cancel_requested)
        .get_result(connection)
        .await
        .optional()
}

/// Ends `owner`'s operation; `false` if `owner` no longer holds it.
pub async fn finish(connection: &mut Connection<'_>, id: Uuid, owner: Uuid, outcome: Outcome) -> QueryResult<bool> {
    let state = match &outcome {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Error { state, .. } => state,
    };
    let result =
        serde_json::to_value(&outcome).map_err(|error| diesel::result::Error::SerializationError(error.into()))?;
    let updated = diesel::update(owned(id, owner))
        .set((
            operations::state.eq(state),
            operations::result.eq(result),
            operations::lease_owner.eq(None::<Uuid>),
            operations::lease_expire_time.eq(None::<DateTime<Utc>>),
            operations::done_time.eq(diesel::dsl::now),
            operations::update_time.eq(diesel::dsl::now),
        ))
        .execute(connection)
        .await?;
    Ok(updated == 1)
}

/// One operation, by id.
type ById = diesel::dsl::Find<operations::table, Uuid>;
/// [`ById`], held by one owner.
type ByIdAndOwner = diesel::dsl::Filter<ById, diesel::dsl::Eq<operations::lease_owner, Uuid>>;
/// [`ByIdAndOwner`], still running.
type Owned = diesel::dsl::Filter<ByIdAndOwner, diesel::dsl::Eq<operations::state, &'static str>>;

/// The running operation `id` as long as `owner` holds its lease.
fn owned(id: Uuid, owner: Uuid) -> Owned {
    operations::table.find(id).filter(operations::lease_owner.eq(owner)).filter(operations::state.eq("running"))
}

/// The number PostgreSQL stores for a gRPC code.
pub fn tonic_code(code: tonic::Code) -> i32 {
    code as i32
}
