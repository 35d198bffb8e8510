//! Repository of idempotency records (AIP-155): tenant-scoped creates record theirs in
//! `idempotency_records` (RLS), CreateTenant in `platform_idempotency_records`.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Connection;
use uuid::Uuid;

use super::schema::{idempotency_records, platform_idempotency_records};
use super::tenant_tx::TenantTx;

/// What a stored record says about an earlier request.
#[derive(Debug, Clone, Queryable)]
pub struct StoredRequest {
    /// The RPC.
    pub method: String,
    /// SHA-256 of the request body.
    pub request_sha256: Vec<u8>,
    /// The response, as JSON.
    pub response: serde_json::Value,
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The transaction's tenant.
    Tenant,
    /// The platform (CreateTenant).
    Platform,
}

/// Claims `request_id` for this transaction. Returns `true` if the claim is new; `false` if
/// a committed record exists (read it with [`find`]). A concurrent claim of the same id
/// blocks here until the other transaction ends.
pub async fn claim(
    transaction: &mut TenantTx<'_>,
    scope: Scope,
    request_id: Uuid,
    method: &str,
    request_sha256: &[u8],
) -> QueryResult<bool> {
    let tenant_id = transaction.tenant_id();
    let placeholder = serde_json::Value::Null;
    let inserted = match scope {
        Scope::Tenant => {
            diesel::insert_into(idempotency_records::table)
                .values((
                    idempotency_records::tenant_id.eq(tenant_id),
                    idempotency_records::request_id.eq(request_id),
                    idempotency_records::method.eq(method),
                    idempotency_records::request_sha256.eq(request_sha256),
                    idempotency_records::response.eq(placeholder),
                ))
                .on_conflict_do_nothing()
                .execute(transaction.connection())
                .await?
        }
        Scope::Platform => {
            diesel::insert_into(platform_idempotency_records::table)
                .values((
                    platform_idempotency_records::request_id.eq(request_id),
                    platform_idempotency_records::method.eq(method),
                    platform_idempotency_records::request_sha256.eq(request_sha256),
                    platform_idempotency_records::response.eq(placeholder),
                ))
                .on_conflict_do_nothing()
                .execute(transaction.connection())
                .await?
        }
    };
    Ok(inserted == 1)
}

/// Reads the committed record of `request_id`.
pub async fn find(transaction: &mut TenantTx<'_>, scope: Scope, request_id: Uuid) -> QueryResult<StoredRequest> {
    let tenant_id = transaction.tenant_id();
    match scope {
        Scope::Tenant => {
            idempotency_records::table
                .find((tenant_id, request_id))
                .select((
                    idempotency_records::method,
                    idempotency_records::request_sha256,
                    idempotency_records::response,
                ))
                .first(transaction.connection())
                .await
        }
        Scope::Platform => {
            platform_idempotency_records::table
                .find(request_id)
                .select((
                    platform_idempotency_records::method,
                    platform_idempotency_records::request_sha256,
                    platform_idempotency_records::response,
                ))
                .first(transaction.connection())
                .await
        }
    }
}

/// Stores the response of a claimed request.
pub async fn complete(
    transaction: &mut TenantTx<'_>,
    scope: Scope,
    request_id: Uuid,
    response: serde_json::Value,
) -> QueryResult<()> {
    let tenant_id = transaction.tenant_id();
    match scope {
        Scope::Tenant => {
            diesel::update(idempotency_records::table.find((tenant_id, request_id)))
                .set(idempotency_records::response.eq(response))
                .execute(transaction.connection())
                .await?
        }
        Scope::Platform => {
            diesel::update(platform_idempotency_records::table.find(request_id))
                .set(platform_idempotency_records::response.eq(response))
                .execute(transaction.connection())
                .await?
        }
    };
    Ok(())
}

/// Deletes the transaction's tenant's records older than `retention`.
pub async fn prune_tenant(transaction: &mut TenantTx<'_>, retention: std::time::Duration) -> QueryResult<usize> {
    let tenant_id = transaction.tenant_id();
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(1));
    diesel::delete(
        idempotency_records::table
            .filter(idempotency_records::tenant_id.eq(tenant_id))
            .filter(idempotency_records::create_time.lt(cutoff)),
    )
    .execute(transaction.connection())
    .await
}

/// Deletes platform records older than `retention`.
pub async fn prune_platform(connection: &mut Connection<'_>, retention: std::time::Duration) -> QueryResult<usize> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(1));
    diesel::delete(platform_idempotency_records::table.filter(platform_idempotency_records::create_time.lt(cutoff)))
        .execute(connection)
        .await
}
