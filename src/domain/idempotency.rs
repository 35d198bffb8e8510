//! Exactly-once creates (AIP-155). A create with a `request_id` claims it in its own
//! transaction: the first attempt stores its response there; a retry with the same body
//! gets that response back and creates nothing; a retry with another body is
//! INVALID_ARGUMENT. Concurrent attempts serialise on the record's primary key.
//!
//! An empty `request_id` is no key: the create runs once, undeduplicated. proto3 cannot tell
//! an unset string from an empty one, so refusing empty would refuse every client that does
//! not use the field (docs/decisions/0011-readme-runs.md). Anything else must be a canonical
//! UUID (REQUEST_ID_MALFORMED otherwise, blanks included).

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::db::idempotency::Scope;
use crate::db::tenant_tx::TenantTx;
use crate::error::{Error, Reason, Result};

/// How long records are kept, at least.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The idempotency key of one create request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    scope: Scope,
    request_id: Uuid,
    method: &'static str,
    request_sha256: [u8; 32],
}

impl RequestKey {
    /// The key of a request with `request_id` and validated `body`; `None` when `request_id` is
    /// empty (no key).
    pub fn new(scope: Scope, method: &'static str, request_id: &str, body: &impl Serialize) -> Result<Option<Self>> {
        let Some(request_id) = parse_request_id("request_id", request_id)? else {
            return Ok(None);
        };
        let canonical = serde_json::to_vec(body).map_err(|error| Error::internal(error.into()))?;
        Ok(Some(Self { scope, request_id, method, request_sha256: Sha256::digest(&canonical).into() }))
    }

    /// The request id.
    pub fn request_id(&self) -> Uuid {
        self.request_id
    }
}

/// A `request_id` as [`RequestKey::new`] takes it: `None` when empty, REQUEST_ID_MALFORMED
/// unless a canonical UUID. For a request whose body is known only later (an upload), to
/// refuse a malformed id before reading the body.
pub fn parse_request_id(field: &str, request_id: &str) -> Result<Option<Uuid>> {
    if request_id.is_empty() {
        return Ok(None);
    }
    Uuid::try_parse(request_id)
        .ok()
        .filter(|_| request_id.len() == 36)
        .map(Some)
        .ok_or_else(|| Error::invalid(Reason::RequestIdMalformed, field, "must be a UUID in canonical form"))
}

/// Whether a platform record of `method` exists for `request_id` (committed, or being
/// claimed by a concurrent transaction that has not ended: then not yet visible).
pub async fn platform_record_exists(transaction: &mut TenantTx<'_>, request_id: Uuid, method: &str) -> Result<bool> {
    let stored = crate::db::idempotency::find(transaction, Scope::Platform, request_id).await;
    match stored {
        Ok(stored) => Ok(stored.method == method),
        Err(diesel::result::Error::NotFound) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Claims the request. `Ok(Some(response))` is a replay to return as is; `Ok(None)` means
/// go ahead and create, then call [`finish`] in the same transaction.
pub async fn begin<T: DeserializeOwned>(transaction: &mut TenantTx<'_>, key: &Option<RequestKey>) -> Result<Option<T>> {
    let Some(key) = key else {
        return Ok(None);
    };
    // Expired records are pruned lazily by the next create in the same scope.
    match key.scope {
        Scope::Tenant => crate::db::idempotency::prune_tenant(transaction, RETENTION).await?,
        Scope::Platform => crate::db::idempotency::prune_platform(transaction.connection(), RETENTION).await?,
    };
    let claimed =
        crate::db::idempotency::claim(transaction, key.scope, key.request_id, key.method, &key.request_sha256)
            .await
            .map_err(|error| crate::error::from_database(error, constraint_error))?;
    if claimed {
        return Ok(None);
    }
    let stored = crate::db::idempotency::find(transaction, key.scope, key.request_id).await?;
    if stored.method != key.method || stored.request_sha256 != key.request_sha256 {
        return Err(Error::invalid(
            Reason::RequestIdReused,
            "request_id",
            "was already used for a different request; use a new request_id",
        ));
    }
    serde_json::from_value(stored.response)
        .map(Some)
        .map_err(|error| Error::internal(anyhow::Error::new(error).context("stored idempotent response is unreadable")))
}

/// Stores the response of a claimed request.
pub async fn finish<T: Serialize>(
    transaction: &mut TenantTx<'_>,
    key: &Option<RequestKey>,
    response: &T,
) -> Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    let json = serde_json::to_value(response).map_err(|error| Error::internal(error.into()))?;
    crate::db::idempotency::complete(transaction, key.scope, key.request_id, json).await?;
    Ok(())
}

/// What a violated constraint means when a request is claimed; `None` for a constraint this
/// module does not expect (INTERNAL). A claim skips a taken request id (ON CONFLICT DO
/// NOTHING), so the keys below are answered only should that ever change. Public so that
/// tests/api/citus.rs can check every constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "idempotency_records_pkey" | "platform_idempotency_records_pkey" => {
            Some(Error::already_exists(Reason::RequestIdAlreadyExists, "request_id"))
        }
        "idempotency_records_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        _ => None,
    }
}
