//! Tenant resolution: selector → live tenant, cache first.
//!
//! A tenant's state is cached in Redis under `t:{<id>}:state` for a bounded TTL and
//! deleted whenever the control plane changes the tenant, so every replica sees the
//! change at its next request. Slugs never change, so slug → id is cached in-process.
//! Without Redis every resolution reads PostgreSQL; an invalidation lost while Redis was
//! down is bounded by the TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use super::TenantContext;
use super::selector::TenantSelector;
use crate::cache::{RedisCache, RedisKey};
use crate::db::{self, PgPool};
use crate::domain::Slug;
use crate::domain::tenants::TenantState;
use crate::error::{Error, Result};

/// Most slugs kept in the in-process slug → id map before it is cleared.
const MAX_CACHED_SLUGS: usize = 100_000;

/// Resolves tenants for the data plane.
pub struct TenantResolver {
    pool: PgPool,
    cache: RedisCache,
    ttl: Duration,
    slugs: Mutex<HashMap<Slug, Uuid>>,
}

impl TenantResolver {
    /// A resolver reading `pool` and caching in `cache` for `ttl`.
    pub fn new(pool: PgPool, cache: RedisCache, ttl: Duration) -> Self {
        Self { pool, cache, ttl, slugs: Mutex::new(HashMap::new()) }
    }

    /// Resolves a selector to the context of an ACTIVE tenant. Unknown and DELETED
    /// tenants are NOT_FOUND; SUSPENDED ones FAILED_PRECONDITION.
    pub async fn resolve(&self, selector: &TenantSelector) -> Result<TenantContext> {
        let tenant_id = match selector {
            TenantSelector::Id(id) => *id,
            TenantSelector::Slug(slug) => self.id_for_slug(slug).await?,
        };
        match self.state_of(tenant_id).await? {
            TenantState::Active => Ok(TenantContext::new(tenant_id)),
            TenantState::Suspended => {
                Err(Error::FailedPrecondition { reason: "TENANT_SUSPENDED", message: "the tenant is suspended" })
            }
            TenantState::Deleted => Err(tenant_not_found()),
        }
    }

    /// Forgets what is cached about a tenant; call after its state changed.
    pub async fn invalidate(&self, tenant_id: Uuid) {
        self.cache.delete(&state_key(tenant_id)).await;
    }

    async fn id_for_slug(&self, slug: &Slug) -> Result<Uuid> {
        if let Some(id) = self.slugs.lock().ok().and_then(|slugs| slugs.get(slug).copied()) {
            return Ok(id);
        }
        let mut connection = self.pool.get().await?;
        let id = db::tenants::id_by_slug(&mut connection, slug.as_str()).await?.ok_or_else(tenant_not_found)?;
        if let Ok(mut slugs) = self.slugs.lock() {
            if slugs.len() >= MAX_CACHED_SLUGS {
                slugs.clear();
            }
            slugs.insert(slug.clone(), id);
        }
        Ok(id)
    }

    async fn state_of(&self, tenant_id: Uuid) -> Result<TenantState> {
        let key = state_key(tenant_id);
        if let Some(state) = self.cache.get(&key).await.and_then(|cached| TenantState::parse(&cached)) {
            return Ok(state);
        }
        let mut connection = self.pool.get().await?;
        let stored = db::tenants::state_by_id(&mut connection, tenant_id).await?.ok_or_else(tenant_not_found)?;
        let state = TenantState::parse(&stored)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("tenant {tenant_id} has unknown state {stored:?}")))?;
        drop(connection);
        self.cache.set(&key, state.as_str(), self.ttl).await;
        Ok(state)
    }
}

fn state_key(tenant_id: Uuid) -> RedisKey {
    RedisKey::for_tenant(tenant_id, &["state"])
}

fn tenant_not_found() -> Error {
    Error::NotFound { reason: "TENANT_NOT_FOUND" }
}
