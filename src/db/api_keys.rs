//! Repository of the tenant-scoped `api_keys` table. Every function takes a [`TenantTx`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::api_keys;
use super::tenant_tx::{TenantQuery, TenantTx};

/// A stored API key (the secret's hash, never the secret).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRow {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub display_name: String,
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
    /// `read` and/or `write`.
    pub scopes: Vec<String>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Expiry time.
    pub expire_time: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoke_time: Option<DateTime<Utc>>,
    /// Last use, recorded in batches.
    pub last_used_time: Option<DateTime<Utc>>,
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub display_name: String,
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry time.
    pub expire_time: Option<DateTime<Utc>>,
}

/// Inserts a key into the transaction's tenant.
pub async fn insert(transaction: &mut TenantTx<'_>, key: NewApiKey) -> QueryResult<ApiKeyRow> {
    let tenant_id = transaction.tenant_id();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::tenant_id.eq(tenant_id),
            api_keys::id.eq(key.id),
            api_keys::display_name.eq(key.display_name),
            api_keys::secret_sha256.eq(key.secret_sha256),
            api_keys::scopes.eq(key.scopes),
            api_keys::expire_time.eq(key.expire_time),
        ))
        .returning(ApiKeyRow::as_returning())
        .get_result(transaction.connection())
        .await
}

/// Finds a key of the transaction's tenant.
pub fn find<'c>(on: impl TenantQuery<'c>, id: Uuid) -> BoxFuture<'c, QueryResult<Option<ApiKeyRow>>> {
    let tenant_id = on.tenant_id();
    on.optional(api_keys::table.find((tenant_id, id)).select(ApiKeyRow::as_select()))
}

/// One page of the tenant's keys in id (creation) order, after a cursor.
pub fn list<'c>(
    on: impl TenantQuery<'c>,
    after: Option<Uuid>,
    limit: i64,
) -> BoxFuture<'c, QueryResult<Vec<ApiKeyRow>>> {
    let tenant_id = on.tenant_id();
    on.load(
        api_keys::table
            .filter(api_keys::tenant_id.eq(tenant_id))
            .filter(api_keys::id.gt(after.unwrap_or(Uuid::nil())))
            .order(api_keys::id.asc())
            .limit(limit)
            .select(ApiKeyRow::as_select()),
    )
}

/// Marks a key revoked now, if it is not already; returns whether this call revoked it, and
/// the key as stored afterwards.
pub async fn revoke(transaction: &mut TenantTx<'_>, id: Uuid) -> QueryResult<(bool, Option<ApiKeyRow>)> {
    let tenant_id = transaction.tenant_id();
    let changed = diesel::update(api_keys::table.find((tenant_id, id)).filter(api_keys::revoke_time.is_null()))
        .set(api_keys::revoke_time.eq(diesel::dsl::now))
        .execute(transaction.connection())
        .await?;
    Ok((changed > 0, find(transaction, id).await?))
}

/// Records when keys were last used (never moving the time backwards).
pub async fn touch(transaction: &mut TenantTx<'_>, id: Uuid, used: DateTime<Utc>) -> QueryResult<()> {
    let tenant_id = transaction.tenant_id();
    diesel::update(
        api_keys::table
            .find((tenant_id, id))
            .filter(api_keys::last_used_time.is_null().or(api_keys::last_used_time.lt(used))),
    )
    .set(api_keys::last_used_time.eq(used))
    .execute(transaction.connection())
    .await?;
    Ok(())
}
