//! Repository of the global `plans` table: named sets of limits and setting defaults.
//! Functions take a connection; plans belong to no tenant.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Connection;
use super::schema::plans;

/// A stored plan.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = plans, check_for_backend(diesel::pg::Pg))]
pub struct PlanRow {
    /// Id (UUIDv7, the page order).
    pub id: Uuid,
    /// Name, unique and immutable.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Limits, a JSON object.
    pub limits: serde_json::Value,
    /// Setting defaults, a JSON object of scalars.
    pub settings: serde_json::Value,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Who created it: `bootstrap` or `operator:<id>`.
    pub created_by: String,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Who last changed it.
    pub updated_by: String,
    /// Revision, the source of the etag.
    pub revision: i64,
}

/// A plan to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = plans)]
pub struct NewPlanRow<'a> {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Limits.
    pub limits: serde_json::Value,
    /// Setting defaults.
    pub settings: serde_json::Value,
    /// Who creates it.
    pub created_by: &'a str,
    /// The same, as its last change.
    pub updated_by: &'a str,
}

/// The mutable columns of a plan, written together by [`save`].
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = plans)]
pub struct PlanChanges {
    /// Display name.
    pub display_name: String,
    /// Limits.
    pub limits: serde_json::Value,
    /// Setting defaults.
    pub settings: serde_json::Value,
    /// Who changes it.
    pub updated_by: String,
}

/// Inserts a plan.
pub async fn insert(connection: &mut Connection<'_>, row: NewPlanRow<'_>) -> QueryResult<PlanRow> {
    diesel::insert_into(plans::table).values(row).returning(PlanRow::as_returning()).get_result(connection).await
}

/// Finds a plan by name.
pub async fn find(connection: &mut Connection<'_>, name: &str) -> QueryResult<Option<PlanRow>> {
    plans::table.filter(plans::name.eq(name)).select(PlanRow::as_select()).first(connection).await.optional()
}

/// Every plan's name and revision (plans are the platform's few tiers).
pub async fn revisions(connection: &mut Connection<'_>) -> QueryResult<Vec<(String, i64)>> {
    plans::table.select((plans::name, plans::revision)).load(connection).await
}

/// Finds a plan by name and locks its row until the transaction ends.
pub async fn lock(connection: &mut Connection<'_>, name: &str) -> QueryResult<Option<PlanRow>> {
    plans::table
        .filter(plans::name.eq(name))
        .select(PlanRow::as_select())
        .for_update()
        .first(connection)
        .await
        .optional()
}

/// One page of plans in id (creation) order, after a cursor.
pub async fn list(connection: &mut Connection<'_>, after: Option<Uuid>, limit: i64) -> QueryResult<Vec<PlanRow>> {
    plans::table
        .filter(plans::id.gt(after.unwrap_or(Uuid::nil())))
        .order(plans::id.asc())
        .limit(limit)
        .select(PlanRow::as_select())
        .load(connection)
        .await
}

/// Writes a plan's mutable columns, bumps its revision and update time.
pub async fn save(connection: &mut Connection<'_>, id: Uuid, changes: PlanChanges) -> QueryResult<PlanRow> {
    diesel::update(plans::table.find(id))
        .set((changes, plans::revision.eq(plans::revision + 1), plans::update_time.eq(diesel::dsl::now)))
        .returning(PlanRow::as_returning())
        .get_result(connection)
        .await
}
