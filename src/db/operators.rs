//! Repository of the global `operators` table: named platform credentials. Functions take
//! a connection; operators belong to no tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Connection;
use super::schema::operators;

/// A stored operator (the secret's hash, never the secret).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = operators, check_for_backend(diesel::pg::Pg))]
pub struct OperatorRow {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub display_name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// SHA-256 of the key's secret.
    pub secret_sha256: Vec<u8>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Who created it: `bootstrap` or `operator:<id>`.
    pub created_by: String,
    /// Revocation time.
    pub revoke_time: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// An operator to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = operators)]
pub struct NewOperatorRow<'a> {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub display_name: &'a str,
    /// Role.
    pub role: &'a str,
    /// SHA-256 of the key's secret.
    pub secret_sha256: &'a [u8],
    /// Who creates it.
    pub created_by: &'a str,
}

/// Inserts an operator.
pub async fn insert(connection: &mut Connection<'_>, row: NewOperatorRow<'_>) -> QueryResult<OperatorRow> {
    diesel::insert_into(operators::table)
        .values(row)
        .returning(OperatorRow::as_returning())
        .get_result(connection)
        .await
}

/// Finds an operator by id.
pub async fn find(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<Option<OperatorRow>> {
    operators::table.find(id).select(OperatorRow::as_select()).first(connection).await.optional()
}

/// One page of operators in id (creation) order, after a cursor.
pub async fn list(connection: &mut Connection<'_>, after: Option<Uuid>, limit: i64) -> QueryResult<Vec<OperatorRow>> {
    operators::table
        .filter(operators::id.gt(after.unwrap_or(Uuid::nil())))
        .order(operators::id.asc())
        .limit(limit)
        .select(OperatorRow::as_select())
        .load(connection)
        .await
}

/// Marks an operator revoked now by `revoked_by`, if it is not already; `None` when that
/// changed nothing (no such operator, or revoked already).
pub async fn revoke(connection: &mut Connection<'_>, id: Uuid, revoked_by: &str) -> QueryResult<Option<OperatorRow>> {
    diesel::update(operators::table.find(id).filter(operators::revoke_time.is_null()))
        .set((operators::revoke_time.eq(diesel::dsl::now), operators::revoked_by.eq(revoked_by)))
        .returning(OperatorRow::as_returning())
        .get_result(connection)
        .await
        .optional()
}
