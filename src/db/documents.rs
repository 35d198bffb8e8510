//! Repository of the tenant-scoped `documents` table. Every function takes a [`TenantTx`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::documents;
use super::tenant_tx::{TenantQuery, TenantTx};

/// A stored document.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = documents, check_for_backend(diesel::pg::Pg))]
pub struct DocumentRow {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Content.
    pub content: Vec<u8>,
    /// SHA-256 of the content.
    pub content_sha256: Vec<u8>,
    /// Metadata (a JSON object).
    pub metadata: serde_json::Value,
    /// Owning user (same tenant).
    pub owner_user_id: Uuid,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Revision, the source of the etag.
    pub revision: i64,
}

/// The writable columns of a document.
#[derive(Debug, Clone, AsChangeset, Insertable)]
#[diesel(table_name = documents)]
pub struct DocumentFields {
    /// Title.
    pub title: String,
    /// Content.
    pub content: Vec<u8>,
    /// SHA-256 of the content.
    pub content_sha256: Vec<u8>,
    /// Metadata.
    pub metadata: serde_json::Value,
    /// Owning user.
    pub owner_user_id: Uuid,
}

/// Inserts a document into the transaction's tenant.
pub async fn insert(transaction: &mut TenantTx<'_>, id: Uuid, fields: DocumentFields) -> QueryResult<DocumentRow> {
    let tenant_id = transaction.tenant_id();
    diesel::insert_into(documents::table)
        .values((documents::tenant_id.eq(tenant_id), documents::id.eq(id), fields))
        .returning(DocumentRow::as_returning())
        .get_result(transaction.connection())
        .await
}

/// Finds a document of the transaction's tenant.
pub fn find<'c>(on: impl TenantQuery<'c>, id: Uuid) -> BoxFuture<'c, QueryResult<Option<DocumentRow>>> {
    let tenant_id = on.tenant_id();
    on.optional(documents::table.find((tenant_id, id)).select(DocumentRow::as_select()))
}

/// Finds a document and locks its row until the transaction ends.
pub async fn lock(transaction: &mut TenantTx<'_>, id: Uuid) -> QueryResult<Option<DocumentRow>> {
    let tenant_id = transaction.tenant_id();
    documents::table
        .find((tenant_id, id))
        .select(DocumentRow::as_select())
        .for_update()
        .first(transaction.connection())
        .await
        .optional()
}

diesel::define_sql_function! {
    /// PostgreSQL's `octet_length(bytea)`.
    fn octet_length(value: diesel::sql_types::Bytea) -> diesel::sql_types::Integer;
}

/// Ids and content sizes of the next documents in id order after a cursor, optionally one
/// owner's: enough to decide how many fit in a response before loading any content.
pub async fn list_sizes(
    transaction: &mut TenantTx<'_>,
    owner: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<(Uuid, i32)>> {
    let tenant_id = transaction.tenant_id();
    let mut query = documents::table
        .filter(documents::tenant_id.eq(tenant_id))
        .filter(documents::id.gt(after.unwrap_or(Uuid::nil())))
        .order(documents::id.asc())
        .limit(limit)
        .select((documents::id, octet_length(documents::content)))
        .into_boxed();
    if let Some(owner) = owner {
        query = query.filter(documents::owner_user_id.eq(owner));
    }
    query.load(transaction.connection()).await
}

/// The documents with these ids, in id order.
pub async fn find_many(transaction: &mut TenantTx<'_>, ids: &[Uuid]) -> QueryResult<Vec<DocumentRow>> {
    let tenant_id = transaction.tenant_id();
    documents::table
        .filter(documents::tenant_id.eq(tenant_id))
        .filter(documents::id.eq_any(ids))
        .order(documents::id.asc())
        .select(DocumentRow::as_select())
        .load(transaction.connection())
        .await
}

/// Writes a document's fields, bumps its revision and update time.
pub async fn save(transaction: &mut TenantTx<'_>, id: Uuid, fields: DocumentFields) -> QueryResult<DocumentRow> {
    let tenant_id = transaction.tenant_id();
    diesel::update(documents::table.find((tenant_id, id)))
        .set((fields, documents::revision.eq(documents::revision + 1), documents::update_time.eq(diesel::dsl::now)))
        .returning(DocumentRow::as_returning())
        .get_result(transaction.connection())
        .await
}

/// Deletes a document; returns whether a row was deleted.
pub async fn delete(transaction: &mut TenantTx<'_>, id: Uuid) -> QueryResult<bool> {
    let tenant_id = transaction.tenant_id();
    let deleted = diesel::delete(documents::table.find((tenant_id, id))).execute(transaction.connection()).await?;
    Ok(deleted > 0)
}
