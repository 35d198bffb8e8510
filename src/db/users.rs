//! Repository of the tenant-scoped `users` table. Every function takes a
//! [`TenantTx`]: an open transaction whose `app.tenant_id` is set, so RLS applies. The
//! explicit `tenant_id` predicates are for the indexes, which lead with `tenant_id`; RLS
//! would isolate tenants without them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::users;
use super::tenant_tx::{TenantQuery, TenantTx};

/// A stored user.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// `viewer`, `member` or `admin`.
    pub role: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Revision, the source of the etag.
    pub revision: i64,
}

/// The writable columns of a user.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserFields {
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: String,
}

/// Inserts a user into the transaction's tenant.
pub async fn insert(transaction: &mut TenantTx<'_>, id: Uuid, fields: UserFields) -> QueryResult<UserRow> {
    let tenant_id = transaction.tenant_id();
    diesel::insert_into(users::table)
        .values((
            users::tenant_id.eq(tenant_id),
            users::id.eq(id),
            users::email.eq(fields.email),
            users::display_name.eq(fields.display_name),
            users::role.eq(fields.role),
        ))
        .returning(UserRow::as_returning())
        .get_result(transaction.connection())
        .await
}

/// Finds a user of the transaction's tenant.
pub fn find<'c>(on: impl TenantQuery<'c>, id: Uuid) -> BoxFuture<'c, QueryResult<Option<UserRow>>> {
    let tenant_id = on.tenant_id();
    on.optional(users::table.find((tenant_id, id)).select(UserRow::as_select()))
}

/// Finds a user and locks its row until the transaction ends.
pub async fn lock(transaction: &mut TenantTx<'_>, id: Uuid) -> QueryResult<Option<UserRow>> {
    let tenant_id = transaction.tenant_id();
    users::table
        .find((tenant_id, id))
        .select(UserRow::as_select())
        .for_update()
        .first(transaction.connection())
        .await
        .optional()
}

/// One page of the tenant's users in id (creation) order, after a cursor.
pub fn list<'c>(on: impl TenantQuery<'c>, after: Option<Uuid>, limit: i64) -> BoxFuture<'c, QueryResult<Vec<UserRow>>> {
    let tenant_id = on.tenant_id();
    on.load(
        users::table
            .filter(users::tenant_id.eq(tenant_id))
            .filter(users::id.gt(after.unwrap_or(Uuid::nil())))
            .order(users::id.asc())
            .limit(limit)
            .select(UserRow::as_select()),
    )
}

/// Writes a user's fields, bumps its revision and update time.
pub async fn save(transaction: &mut TenantTx<'_>, id: Uuid, fields: UserFields) -> QueryResult<UserRow> {
    let tenant_id = transaction.tenant_id();
    diesel::update(users::table.find((tenant_id, id)))
        .set((fields, users::revision.eq(users::revision + 1), users::update_time.eq(diesel::dsl::now)))
        .returning(UserRow::as_returning())
        .get_result(transaction.connection())
        .await
}

/// Deletes a user; returns whether a row was deleted.
pub async fn delete(transaction: &mut TenantTx<'_>, id: Uuid) -> QueryResult<bool> {
    let tenant_id = transaction.tenant_id();
    let deleted = diesel::delete(users::table.find((tenant_id, id))).execute(transaction.connection()).await?;
    Ok(deleted > 0)
}
