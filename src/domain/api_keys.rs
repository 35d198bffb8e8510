//! Tenant API keys: creation (the secret is shown once), listing, revocation, and the
//! checks that authenticate a request with one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit;
use super::idempotency::{self, RequestKey};
use super::page::{self, PageToken, fingerprint};
use super::quotas::{self, Quota, QuotaScope};
use super::tenants::TenantState;
use crate::auth::api_key::ApiKeyToken;
use crate::db::api_keys::{ApiKeyRow, NewApiKey};
use crate::db::tenant_tx::TenantTx;
use crate::error::{Error, Reason, Result};
use crate::tenancy::resolver::{KeyRecord, TenantResolver};
use crate::tenancy::{RequestContext, Scope, TenantContext, TenantDb};

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: Uuid,
    /// Display name.
    pub display_name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Expiry.
    pub expire_time: Option<DateTime<Utc>>,
    /// Revocation.
    pub revoke_time: Option<DateTime<Utc>>,
    /// Last use (batched).
    pub last_used_time: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            tenant_id: row.tenant_id,
            display_name: row.display_name,
            scopes: row.scopes.iter().filter_map(|scope| Scope::parse(scope)).collect(),
            create_time: row.create_time,
            expire_time: row.expire_time,
            revoke_time: row.revoke_time,
            last_used_time: row.last_used_time,
        }
    }
}

/// A validated key to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    /// Display name.
    pub display_name: String,
    /// Scopes, deduplicated.
    pub scopes: Vec<Scope>,
    /// Expiry, in the future.
    pub expire_time: Option<DateTime<Utc>>,
}

/// A created key: the key, and its secret unless this is a replay.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The key.
    pub key: ApiKey,
    /// The whole key text, shown once; `None` for an idempotent replay.
    pub secret: Option<String>,
}

/// One page of keys.
#[derive(Debug, Clone)]
pub struct ApiKeyPage {
    /// The keys.
    pub keys: Vec<ApiKey>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// Checks a presented key against its record: it must exist, hash to the stored secret
/// (compared in constant time), not be revoked and not be expired. Every failure is
/// UNAUTHENTICATED. Returns the key's scopes.
pub fn authenticate(token: &ApiKeyToken, record: Option<KeyRecord>) -> Result<Vec<Scope>> {
    let record = record.ok_or(Error::new(Reason::ApiKeyInvalid))?;
    if !token.matches(&record.secret_sha256) {
        return Err(Error::new(Reason::ApiKeyInvalid));
    }
    if record.revoked {
        return Err(Error::new(Reason::ApiKeyRevoked));
    }
    if record.expire_time.is_some_and(|expiry| expiry <= Utc::now()) {
        return Err(Error::new(Reason::ApiKeyExpired));
    }
    Ok(record.scopes)
}

/// The control plane's operations on API keys.
#[derive(Clone)]
pub struct ApiKeys {
    database: TenantDb,
    resolver: Arc<TenantResolver>,
}

impl ApiKeys {
    /// Keys stored through `database`; revocations invalidate `resolver`'s caches.
    pub fn new(database: TenantDb, resolver: Arc<TenantResolver>) -> Self {
        Self { database, resolver }
    }

    /// Creates a key for a tenant that is not deleted, exactly once per `request_id`.
    pub async fn create(
        &self,
        request: RequestContext,
        tenant_id: Uuid,
        new: NewKey,
        request_id: &str,
    ) -> Result<CreatedKey> {
        self.require_not_deleted(tenant_id).await?;
        let key = RequestKey::new(idempotency::Scope::Tenant, "CreateApiKey", request_id, &new)?;
        let context = self.resolver.context(tenant_id, request).await?;
        let scope = QuotaScope::of(&context);
        self.database
            .run(&context, async move |transaction| {
                if let Some(replay) = idempotency::begin::<ApiKey>(transaction, &key).await? {
                    return Ok(CreatedKey { key: replay, secret: None });
                }
                let token = ApiKeyToken::generate(tenant_id, Uuid::now_v7()).map_err(Error::internal)?;
                let row = crate::db::api_keys::insert(
                    transaction,
                    NewApiKey {
                        id: token.key_id(),
                        display_name: new.display_name,
                        secret_sha256: token.secret_sha256().to_vec(),
                        scopes: new.scopes.iter().map(|scope| scope.as_str().to_owned()).collect(),
                        expire_time: new.expire_time,
                    },
                )
                .await
                .map_err(|error| crate::error::from_database(error, constraint_error))?;
                quotas::charge(transaction, &scope, Quota::ApiKeys, 1).await?;
                let created = ApiKey::from(row);
                let details = serde_json::json!({ "scopes": created.scopes, "expire_time": created.expire_time });
                audit::record(transaction, "api_key.create", "api_key", created.id, details).await?;
                idempotency::finish(transaction, &key, &created).await?;
                Ok(CreatedKey { key: created, secret: Some(token.encode()) })
            })
            .await
    }

    /// Lists a tenant's keys in creation order.
    pub async fn list(
        &self,
        request: RequestContext,
        tenant_id: Uuid,
        page_size: i64,
        page_token: &str,
    ) -> Result<ApiKeyPage> {
        if self.resolver.state(tenant_id).await?.is_none() {
            return Err(Error::new(Reason::TenantNotFound));
        }
        let filter = fingerprint("");
        let after = PageToken::decode(page_token, tenant_id, filter)?;
        let context = TenantContext::new(tenant_id, request);
        let mut rows = self
            .database
            .read(&context, async move |transaction| {
                Ok(crate::db::api_keys::list(transaction, after, page_size + 1).await?)
            })
            .await?;
        let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, tenant_id, filter);
        Ok(ApiKeyPage { keys: rows.into_iter().map(ApiKey::from).collect(), next_page_token })
    }

    /// Revokes a key; every replica refuses it from then on. Revoking twice is a no-op.
    pub async fn revoke(&self, request: RequestContext, tenant_id: Uuid, key_id: Uuid) -> Result<ApiKey> {
        let context = TenantContext::new(tenant_id, request);
        let (key, revoked_now) =
            self.database.run(&context, async move |transaction| revoke_in(transaction, key_id).await).await?;
        self.resolver.invalidate(tenant_id, Some(key_id)).await;
        if revoked_now {
            tracing::info!(tenant.id = %tenant_id, api_key.id = %key_id, "api key revoked");
        } else {
            tracing::info!(tenant.id = %tenant_id, api_key.id = %key_id, "api key already revoked");
        }
        Ok(key)
    }

    /// Whether `token` is a valid key (known, matching, not revoked, not expired): the
    /// question ResolveTenant asks. A lookup that fails (the database is down) is an error,
    /// never a "no".
    pub async fn is_valid(&self, token: &ApiKeyToken) -> Result<bool> {
        Ok(authenticate(token, self.resolver.api_key(token).await?).is_ok())
    }

    async fn require_not_deleted(&self, tenant_id: Uuid) -> Result<()> {
        match self.resolver.state(tenant_id).await? {
            None => Err(Error::new(Reason::TenantNotFound)),
            Some(TenantState::Deleted) => Err(Error::new(Reason::TenantDeleted)),
            Some(TenantState::Purging) => Err(Error::new(Reason::TenantPurging)),
            Some(TenantState::Purged) => Err(Error::new(Reason::TenantPurged)),
            Some(_) => Ok(()),
        }
    }
}

/// Revokes a key inside the tenant transaction: the key, and whether this call revoked it
/// (`false`: it was revoked already, and nothing changed).
async fn revoke_in(transaction: &mut TenantTx<'_>, key_id: Uuid) -> Result<(ApiKey, bool)> {
    let before =
        crate::db::api_keys::find(&mut *transaction, key_id).await?.ok_or(Error::new(Reason::ApiKeyNotFound))?;
    if before.revoke_time.is_some() {
        return Ok((before.into(), false));
    }
    let (revoked, after) = crate::db::api_keys::revoke(transaction, key_id).await?;
    let after = after.ok_or(Error::new(Reason::ApiKeyNotFound))?;
    if !revoked {
        // A concurrent revocation got there first: it released the slot and audited.
        return Ok((after.into(), false));
    }
    quotas::release(transaction, Quota::ApiKeys, 1).await?;
    audit::record(transaction, "api_key.revoke", "api_key", key_id, serde_json::json!({})).await?;
    Ok((after.into(), true))
}

/// What a violated constraint means when API keys are written; `None` for a constraint this
/// module does not expect (INTERNAL). Public so that tests/api/citus.rs can check every
/// constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "api_keys_pkey" => Some(Error::already_exists(Reason::ApiKeyAlreadyExists, "api_key.id")),
        "api_keys_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        _ => None,
    }
}
