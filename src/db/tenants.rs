//! Repository of the global `tenants` table. Functions take a connection; the control
//! plane opens the transaction around them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Connection;
use uuid::Uuid;

use super::schema::{plans, tenants};

/// A stored tenant.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tenants, check_for_backend(diesel::pg::Pg))]
pub struct TenantRow {
    /// Id.
    pub id: Uuid,
    /// Slug; `None` once purged (released).
    pub slug: Option<String>,
    /// Display name; `None` once purged.
    pub display_name: Option<String>,
    /// A state's stored form ([`crate::tenancy::TenantState`]).
    pub state: String,
    /// Labels as a JSON object of strings.
    pub labels: serde_json::Value,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Deletion time, for deleted tenants.
    pub delete_time: Option<DateTime<Utc>>,
    /// Revision, the source of the etag.
    pub revision: i64,
    /// `pooled` or `schema`.
    pub isolation_tier: String,
    /// The tenant-schema migration a schema tenant's schema has reached; `None` while it
    /// has none.
    pub schema_version: Option<String>,
    /// The plan's name; `None`: no plan (unlimited).
    pub plan: Option<String>,
    /// Overrides of the plan's limits, a JSON object.
    pub limit_overrides: serde_json::Value,
    /// When the tenant was purged.
    pub purge_time: Option<DateTime<Utc>>,
}

/// A tenant to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = tenants)]
pub struct NewTenantRow<'a> {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Slug.
    pub slug: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Initial state.
    pub state: &'a str,
    /// Labels.
    pub labels: serde_json::Value,
    /// `pooled` or `schema`.
    pub isolation_tier: &'a str,
    /// Plan.
    pub plan: Option<&'a str>,
    /// Overrides of the plan's limits.
    pub limit_overrides: serde_json::Value,
}

/// The mutable columns of a tenant, written together by [`save`].
#[derive(Debug, AsChangeset)]
#[diesel(table_name = tenants, treat_none_as_null = true)]
pub struct TenantChanges {
    /// Display name (`None` once purged).
    pub display_name: Option<String>,
    /// State.
    pub state: String,
    /// Labels.
    pub labels: serde_json::Value,
    /// Deletion time.
    pub delete_time: Option<DateTime<Utc>>,
    /// Plan.
    pub plan: Option<String>,
    /// Overrides of the plan's limits.
    pub limit_overrides: serde_json::Value,
}

/// Inserts a tenant.
pub async fn insert(connection: &mut Connection<'_>, row: NewTenantRow<'_>) -> QueryResult<TenantRow> {
    diesel::insert_into(tenants::table).values(row).returning(TenantRow::as_returning()).get_result(connection).await
}

/// Finds a tenant by id.
pub async fn find_by_id(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<Option<TenantRow>> {
    tenants::table.find(id).select(TenantRow::as_select()).first(connection).await.optional()
}

/// Finds a tenant by slug.
pub async fn find_by_slug(connection: &mut Connection<'_>, slug: &str) -> QueryResult<Option<TenantRow>> {
    tenants::table.filter(tenants::slug.eq(slug)).select(TenantRow::as_select()).first(connection).await.optional()
}

/// Finds a tenant by id and locks its row until the transaction ends. Call inside a
/// transaction.
pub async fn lock_by_id(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<Option<TenantRow>> {
    tenants::table.find(id).select(TenantRow::as_select()).for_update().first(connection).await.optional()
}

/// What resolution reads of a tenant, in one query: its state, tier and schema version, its
/// plan's name and limits, and its overrides.
#[derive(Debug, Clone, Queryable)]
pub struct ResolvedRow {
    /// `active`, `suspended`, `deleted` or `provisioning`.
    pub state: String,
    /// `pooled` or `schema`.
    pub isolation_tier: String,
    /// The version a schema tenant's schema has reached.
    pub schema_version: Option<String>,
    /// The plan's name.
    pub plan: Option<String>,
    /// The plan's limits (`None` without a plan).
    pub plan_limits: Option<serde_json::Value>,
    /// The tenant's overrides of them.
    pub limit_overrides: serde_json::Value,
    /// When the tenant last changed (its plan and overrides among the rest).
    pub update_time: DateTime<Utc>,
    /// When the plan last changed (`None` without a plan).
    pub plan_update_time: Option<DateTime<Utc>>,
    /// The plan's revision (`None` without a plan).
    pub plan_revision: Option<i64>,
}

/// What resolution needs of a tenant: `None` if there is no such tenant.
pub async fn resolved_by_id(connection: &mut Connection<'_>, id: Uuid) -> QueryResult<Option<ResolvedRow>> {
    tenants::table
        .left_join(plans::table.on(plans::name.nullable().eq(tenants::plan)))
        .filter(tenants::id.eq(id))
        .select((
            tenants::state,
            tenants::isolation_tier,
            tenants::schema_version,
            tenants::plan,
            plans::limits.nullable(),
            tenants::limit_overrides,
            tenants::update_time,
            plans::update_time.nullable(),
            plans::revision.nullable(),
        ))
        .first(connection)
        .await
        .optional()
}

/// The ids of the tenants on a plan (deleted ones too: their records may be cached).
pub async fn ids_on_plan(connection: &mut Connection<'_>, plan: &str) -> QueryResult<Vec<Uuid>> {
    tenants::table.filter(tenants::plan.eq(plan)).select(tenants::id).load(connection).await
}

/// Sets a tenant's state from `from` to `to`; `None` if it was not in `from` (or does not
/// exist). Bumps its revision and update time.
pub async fn transition(
    connection: &mut Connection<'_>,
    id: Uuid,
    from: &str,
    to: &str,
) -> QueryResult<Option<TenantRow>> {
    diesel::update(tenants::table.find(id).filter(tenants::state.eq(from)))
        .set((
            tenants::state.eq(to),
            tenants::revision.eq(tenants::revision + 1),
            tenants::update_time.eq(diesel::dsl::now),
        ))
        .returning(TenantRow::as_returning())
        .get_result(connection)
        .await
        .optional()
}

/// The id of the tenant with a slug, for resolution.
pub async fn id_by_slug(connection: &mut Connection<'_>, slug: &str) -> QueryResult<Option<Uuid>> {
    tenants::table.filter(tenants::slug.eq(slug)).select(tenants::id).first(connection).await.optional()
}

/// One page of tenants in id (creation) order, optionally in one state, after a cursor.
pub async fn list(
    connection: &mut Connection<'_>,
    state: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<TenantRow>> {
    let mut query = tenants::table.select(TenantRow::as_select()).order(tenants::id.asc()).limit(limit).into_boxed();
    if let Some(state) = state {
        query = query.filter(tenants::state.eq(state.to_owned()));
    }
    if let Some(after) = after {
        query = query.filter(tenants::id.gt(after));
    }
    query.load(connection).await
}

/// Writes a tenant's mutable columns, bumps its revision and update time.
pub async fn save(connection: &mut Connection<'_>, id: Uuid, changes: TenantChanges) -> QueryResult<TenantRow> {
    diesel::update(tenants::table.find(id))
        .set((changes, tenants::revision.eq(tenants::revision + 1), tenants::update_time.eq(diesel::dsl::now)))
        .returning(TenantRow::as_returning())
        .get_result(connection)
        .await
}
