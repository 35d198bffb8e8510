//! Tenant resolution, shared by every identification strategy: id, slug, domain, channel
//! binding and API key; and the operator records that platform calls authenticate with.
//!
//! Two cache tiers sit in front of PostgreSQL:
//! - in-process, per replica: identifier → tenant id, tenant id → state, key → key record,
//!   operator id → operator record;
//! - Redis, shared by replicas: tenant records (`t:{<id>}:record`: state and what admission routes by), key records
//!   (`t:{<id>}:api_key:<key-id>`) and operator records (`p:operator:<id>`).
//!
//! Every change to a tenant or key deletes its Redis keys and publishes the tenant id on
//! [`INVALIDATION_CHANNEL`]; each replica's listener then evicts what it holds about that
//! tenant, so changes (a suspension, a key revocation) reach every replica within
//! milliseconds. A change to a plan is one message for all its tenants, `plan:<name>:<revision>`
//! (decision 0023): each replica evicts the in-process records of that plan's tenants and
//! from then on takes a record from Redis only if it was read at that revision of its plan
//! or later (records carry their plan's revision), so no tenant's Redis key is touched. A
//! replica learns every plan's revision from PostgreSQL on each (re)subscription, before it
//! reads Redis again, so announcements it missed cannot leave it on a stale record. An operator's revocation does the same with the operator's id (ids are
//! UUIDs: an operator's never names a tenant). While the listener is not subscribed (Redis down or reconnecting),
//! in-process entries live at most [`DEGRADED_TTL`] and nothing is read from Redis, which
//! bounds how stale any replica can be. On (re)subscription the in-process tier is cleared,
//! since announcements may have been missed.
//!
//! Concurrent misses of one key are filled once: the first request reads PostgreSQL (or
//! Redis) while the others wait for it and then read what it stored, so an entry expiring
//! under load costs one query, not one per waiting request (a cache stampede would take
//! every pooled connection).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::selector::TenantSelector;
use super::{IsolationTier, Limits, Quotas, RateLimits, TenantState};
use super::{OperatorRole, RequestContext, Scope, TenantContext, TenantDb};
use crate::auth::api_key::ApiKeyToken;
use crate::auth::operator_key::OperatorKeyToken;
use crate::cache::{INVALIDATION_CHANNEL, RedisCache, RedisKey};
use crate::db;
use crate::error::{Error, Reason, Result};

/// Longest an in-process entry is trusted while invalidations are not being received.
pub const DEGRADED_TTL: Duration = Duration::from_secs(1);
/// Most entries kept in-process; beyond it expired entries are dropped, then all.
const MAX_LOCAL_ENTRIES: usize = 100_000;

/// An identifier that names a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// By slug.
    Slug(String),
    /// By domain (lowercase).
    Domain(String),
    /// By channel binding.
    Channel {
        /// E.g. `slack`.
        channel_type: String,
        /// E.g. a workspace id.
        external_id: String,
    },
}

/// What tenantd needs to know about an API key to authenticate with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRecord {
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
    /// Expiry.
    pub expire_time: Option<DateTime<Utc>>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// What admission needs to know about a tenant, cached per replica and in Redis: everything a
/// data-plane request is checked or routed by, so that admitting it costs no query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantRecord {
    /// Lifecycle state.
    pub state: TenantState,
    /// Request-rate limits (unlimited in records cached before limits existed).
    #[serde(default)]
    pub limits: RateLimits,
    /// Where the tenant's data lives (pooled in records cached before tiers existed).
    #[serde(default)]
    pub tier: IsolationTier,
    /// Whether a schema tenant's schema has reached the tenant-schema migrations this build
    /// expects (always true for a pooled tenant). A tenant whose schema is behind is not
    /// served: UNAVAILABLE with `TENANT_SCHEMA_BEHIND`.
    #[serde(default = "schema_current_default")]
    pub schema_current: bool,
    /// The tenant's plan's name; `None`: no plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// Caps on counted resources, enforced by the creates (unlimited in records cached
    /// before quotas existed).
    #[serde(default)]
    pub quotas: Quotas,
    /// When the tenant's limits last changed, or may have: the later of the tenant's and its
    /// plan's update times (`None` in records cached before it existed: then every capped
    /// create recounts). Quota counters recounted before it (and its grace) are not trusted.
    #[serde(default)]
    pub limits_changed_at: Option<DateTime<Utc>>,
    /// The revision of the plan the limits were read from (`None` without a plan, and in
    /// records cached before it existed: such a record of a tenant with a plan is read again
    /// once that plan's revision is known).
    #[serde(default)]
    pub plan_revision: Option<i64>,
}

fn schema_current_default() -> bool {
    true
}

/// What tenantd needs to know about an operator to authenticate its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorRecord {
    /// SHA-256 of the key's secret.
    pub secret_sha256: Vec<u8>,
    /// The operator's role; `None` for a stored role this build does not know.
    pub role: Option<OperatorRole>,
    /// Whether it was revoked.
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Identifier(Identifier),
    Record(Uuid),
    ApiKey(Uuid),
    Operator(Uuid),
}

#[derive(Debug, Clone)]
enum CacheValue {
    Identified,
    Tenant(TenantRecord),
    ApiKey(KeyRecord),
    Operator(OperatorRecord),
}

#[derive(Debug, Clone)]
struct Entry {
    /// The id whose invalidation evicts this entry: its tenant's, or an operator's own.
    tenant_id: Uuid,
    value: CacheValue,
    inserted: Instant,
    /// How long it is trusted while invalidations flow: the TTL, or [`DEGRADED_TTL`] for a
    /// value read from PostgreSQL that Redis did not take.
    trusted_for: Duration,
}

/// Resolves tenants and API keys, cache first.
pub struct TenantResolver {
    database: TenantDb,
    redis: RedisCache,
    ttl: Duration,
    local: Mutex<HashMap<CacheKey, Entry>>,
    /// One lock per key being filled; see [`TenantResolver::lookup`].
    fills: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped by every invalidation; a fill that started before one is not stored.
    epoch: AtomicU64,
    /// The latest revision of each plan this replica knows of (from announcements and each
    /// subscription's read of PostgreSQL): a record read at an older one is stale.
    plan_revisions: Mutex<HashMap<String, i64>>,
    subscribed: AtomicBool,
    local_hits: AtomicU64,
    redis_hits: AtomicU64,
    misses: AtomicU64,
}

impl TenantResolver {
    /// A resolver reading `database`, sharing state through `redis`, trusting cached
    /// entries for `ttl` while invalidations flow.
    pub fn new(database: TenantDb, redis: RedisCache, ttl: Duration) -> Self {
        Self {
            database,
            redis,
            ttl,
            local: Mutex::new(HashMap::new()),
            fills: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            plan_revisions: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            local_hits: AtomicU64::new(0),
            redis_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Lookups answered in-process, by Redis, and by PostgreSQL, since start.
    pub fn cache_statistics(&self) -> (u64, u64, u64) {
        (
            self.local_hits.load(Ordering::Relaxed),
            self.redis_hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Whether invalidations are being received (so caches may be trusted for the full TTL).
    fn live(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.redis.is_available()
    }

    /// The tenant a selector names, in any state; `None` if no tenant has that name.
    pub async fn tenant_id(&self, selector: &TenantSelector) -> Result<Option<Uuid>> {
        match selector {
            TenantSelector::Id(id) => Ok(self.state(*id).await?.map(|_| *id)),
            TenantSelector::Slug(slug) => self.identify(&Identifier::Slug(slug.as_str().to_owned())).await,
        }
    }

    /// The tenant an identifier names, in any state.
    pub async fn identify(&self, identifier: &Identifier) -> Result<Option<Uuid>> {
        let key = CacheKey::Identifier(identifier.clone());
        let _turn = match self.lookup(&key).await {
            Lookup::Hit(entry) => return Ok(Some(entry.tenant_id)),
            Lookup::Miss(turn) => turn,
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        self.misses.fetch_add(1, Ordering::Relaxed);
        let found = db::retry::read(|| {
            let identifier = identifier.clone();
            self.database.global(async move |connection| {
                Ok(match &identifier {
                    Identifier::Slug(slug) => db::tenants::id_by_slug(connection, slug).await?,
                    Identifier::Domain(domain) => db::identifiers::tenant_by_domain(connection, domain).await?,
                    Identifier::Channel { channel_type, external_id } => {
                        db::identifiers::tenant_by_channel(connection, channel_type, external_id).await?
                    }
                })
            })
        })
        .await?;
        if let Some(tenant_id) = found {
            self.store(epoch, key, tenant_id, CacheValue::Identified);
        }
        Ok(found)
    }

    /// A tenant's state; `None` if there is no such tenant.
    pub async fn state(&self, tenant_id: Uuid) -> Result<Option<TenantState>> {
        Ok(self.record(tenant_id).await?.map(|record| record.state))
    }

    /// What admission needs to know about a tenant; `None` if there is no such tenant.
    pub async fn record(&self, tenant_id: Uuid) -> Result<Option<TenantRecord>> {
        let key = CacheKey::Record(tenant_id);
        let _turn = match self.lookup(&key).await {
            Lookup::Hit(Entry { value: CacheValue::Tenant(record), .. }) => return Ok(Some(record)),
            Lookup::Hit(_) => None,
            Lookup::Miss(turn) => turn,
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let redis_key = record_key(tenant_id);
        let shared = if self.live() { self.redis.get(&redis_key).await } else { None };
        let shared = shared.and_then(|json| serde_json::from_str::<TenantRecord>(&json).ok());
        if let Some(record) = shared.filter(|record| self.is_current(record)) {
            self.redis_hits.fetch_add(1, Ordering::Relaxed);
            self.store(epoch, key, tenant_id, CacheValue::Tenant(record.clone()));
            return Ok(Some(record));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let stored = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::tenants::resolved_by_id(connection, tenant_id).await?))
        })
        .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let record = record_of(tenant_id, stored)?;
        self.fill(epoch, key, tenant_id, &redis_key, &record, CacheValue::Tenant(record.clone())).await;
        Ok(Some(record))
    }

    /// Resolves a data-plane selector to an ACTIVE tenant, with its record: unknown and
    /// DELETED tenants are NOT_FOUND, SUSPENDED ones FAILED_PRECONDITION.
    pub async fn resolve(
        &self,
        selector: &TenantSelector,
        request: RequestContext,
    ) -> Result<(TenantContext, TenantRecord)> {
        let tenant_id = self.tenant_id(selector).await?.ok_or_else(tenant_not_found)?;
        let record = self.require_active(tenant_id).await?;
        Ok((self.context_of(tenant_id, &record, request), record))
    }

    /// The context of a request for `tenant_id` by its `record`: routed by its tier, with its
    /// plan and quotas, and the time from which its quota counters may be trusted.
    pub fn context_of(&self, tenant_id: Uuid, record: &TenantRecord, request: RequestContext) -> TenantContext {
        let trusted_from = record
            .limits_changed_at
            .and_then(|changed| Some(changed + chrono::Duration::from_std(self.recount_grace()).ok()?));
        TenantContext::routed(tenant_id, record.tier, request).with_plan(
            record.plan.clone(),
            record.quotas,
            trusted_from,
        )
    }

    /// How long after a change of a tenant's limits a replica may still create by the old
    /// ones: a record it holds is at most [`Self::new`]'s `ttl` old (an entry cached while
    /// invalidations flowed, on a replica whose subscription died without it noticing yet;
    /// about a second when invalidations flow), and a create admitted by it commits within
    /// [`crate::domain::quotas::COMMIT_BOUND`] more. Quota counters recounted before the
    /// change plus this are recounted again by the next capped charge.
    pub fn recount_grace(&self) -> Duration {
        self.ttl + crate::domain::quotas::COMMIT_BOUND
    }

    /// A context for work on a tenant that exists (in any state), routed by its tier, with its
    /// plan and quotas.
    pub async fn context(&self, tenant_id: Uuid, request: RequestContext) -> Result<TenantContext> {
        let record = self.record(tenant_id).await?.ok_or_else(tenant_not_found)?;
        Ok(self.context_of(tenant_id, &record, request))
    }

    /// The tenant's record, unless the tenant does not exist or is not ACTIVE, or its schema
    /// is not ready (still provisioning, or behind its migrations: UNAVAILABLE).
    pub async fn require_active(&self, tenant_id: Uuid) -> Result<TenantRecord> {
        let record = self.record(tenant_id).await?.ok_or_else(tenant_not_found)?;
        match record.state {
            TenantState::Active if !record.schema_current => Err(Error::new(Reason::TenantSchemaBehind)),
            TenantState::Active => Ok(record),
            TenantState::Provisioning => Err(Error::new(Reason::TenantProvisioning)),
            TenantState::Suspended => Err(Error::new(Reason::TenantSuspended)),
            TenantState::Deleted | TenantState::Purging | TenantState::Purged => Err(tenant_not_found()),
        }
    }

    /// The record of an API key, if the tenant has such a key (whatever its secret).
    pub async fn api_key(&self, token: &ApiKeyToken) -> Result<Option<KeyRecord>> {
        let tenant_id = token.tenant_id();
        let key_id = token.key_id();
        let key = CacheKey::ApiKey(key_id);
        let _turn = match self.lookup(&key).await {
            Lookup::Hit(Entry { value: CacheValue::ApiKey(record), tenant_id: owner, .. }) => {
                return Ok((owner == tenant_id).then_some(record));
            }
            Lookup::Hit(_) => None,
            Lookup::Miss(turn) => turn,
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let redis_key = api_key_key(tenant_id, key_id);
        if self.live() {
            let shared = self.redis.get(&redis_key).await;
            if let Some(record) = shared.and_then(|json| serde_json::from_str::<KeyRecord>(&json).ok()) {
                self.store(epoch, key, tenant_id, CacheValue::ApiKey(record.clone()));
                self.redis_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(record));
            }
        }
        // Keys are tenant data: the lookup runs in the key's tenant's transaction, under RLS.
        let context = TenantContext::new(tenant_id, RequestContext::system());
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Retried on a lost connection, as the other lookups are: an idle pooled connection
        // closed by a PostgreSQL restart must not answer a valid key with UNAVAILABLE.
        let row = db::retry::read(|| {
            self.database.read(&context, async move |transaction| Ok(db::api_keys::find(transaction, key_id).await?))
        })
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = KeyRecord {
            secret_sha256: row.secret_sha256,
            scopes: row.scopes.iter().filter_map(|scope| Scope::parse(scope)).collect(),
            expire_time: row.expire_time,
            revoked: row.revoke_time.is_some(),
        };
        self.fill(epoch, key, tenant_id, &redis_key, &record, CacheValue::ApiKey(record.clone())).await;
        Ok(Some(record))
    }

    /// The record of an operator, if there is such an operator (whatever its secret).
    pub async fn operator(&self, token: &OperatorKeyToken) -> Result<Option<OperatorRecord>> {
        let operator_id = token.operator_id();
        let key = CacheKey::Operator(operator_id);
        let _turn = match self.lookup(&key).await {
            Lookup::Hit(Entry { value: CacheValue::Operator(record), .. }) => return Ok(Some(record)),
            Lookup::Hit(_) => None,
            Lookup::Miss(turn) => turn,
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let redis_key = operator_key(operator_id);
        if self.live() {
            let shared = self.redis.get(&redis_key).await;
            if let Some(record) = shared.and_then(|json| serde_json::from_str::<OperatorRecord>(&json).ok()) {
                self.store(epoch, key, operator_id, CacheValue::Operator(record.clone()));
                self.redis_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(record));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let row = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::operators::find(connection, operator_id).await?))
        })
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = OperatorRecord {
            secret_sha256: row.secret_sha256,
            role: OperatorRole::parse(&row.role),
            revoked: row.revoke_time.is_some(),
        };
        self.fill(epoch, key, operator_id, &redis_key, &record, CacheValue::Operator(record.clone())).await;
        Ok(Some(record))
    }

    /// Forgets an operator's record, here and (through Redis) on every replica. Call after
    /// a change to the operator has committed.
    pub async fn invalidate_operator(&self, operator_id: Uuid) {
        self.evict(operator_id);
        self.redis.delete(&operator_key(operator_id)).await;
        self.redis.publish(INVALIDATION_CHANNEL, &operator_id.to_string()).await;
    }

    /// Forgets everything cached about a tenant, here and (through Redis) on every replica.
    /// Call after a change to the tenant, its identifiers or its keys has committed.
    pub async fn invalidate(&self, tenant_id: Uuid, api_key: Option<Uuid>) {
        self.evict(tenant_id);
        if let Some(key_id) = api_key {
            self.redis.delete(&api_key_key(tenant_id, key_id)).await;
        }
        announce_invalidation(&self.redis, tenant_id).await;
    }

    /// Forgets every record read at an older revision of `plan` than `revision`, here and
    /// (through one announcement) on every replica, whatever the number of its tenants. Call
    /// after the plan's change has committed.
    pub async fn invalidate_plan(&self, plan: &str, revision: i64) {
        self.learn_plan_revision(plan, revision);
        self.redis.publish(INVALIDATION_CHANNEL, &format!("{PLAN_ANNOUNCEMENT}{plan}:{revision}")).await;
    }

    /// Notes that `plan` is at `revision` (or later) and evicts the in-process records read
    /// at an earlier one.
    fn learn_plan_revision(&self, plan: &str, revision: i64) {
        if let Ok(mut known) = self.plan_revisions.lock() {
            let latest = known.entry(plan.to_owned()).or_insert(revision);
            *latest = (*latest).max(revision);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut local) = self.local.lock() {
            local.retain(|_, entry| match &entry.value {
                CacheValue::Tenant(record) => {
                    record.plan.as_deref() != Some(plan) || record.plan_revision.is_some_and(|read| read >= revision)
                }
                _ => true,
            });
        }
    }

    /// Whether `record` was read at its plan's latest known revision (or has no plan).
    fn is_current(&self, record: &TenantRecord) -> bool {
        let Some(plan) = &record.plan else {
            return true;
        };
        let Ok(known) = self.plan_revisions.lock() else {
            return false;
        };
        known.get(plan).is_none_or(|latest| record.plan_revision.is_some_and(|read| read >= *latest))
    }

    /// Learns every plan's revision from PostgreSQL (after subscribing, so that a change
    /// committed meanwhile is announced to this replica if it is not read here).
    async fn load_plan_revisions(&self) {
        let loaded = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::plans::revisions(connection).await?))
        })
        .await;
        match loaded {
            Ok(revisions) => {
                for (plan, revision) in revisions {
                    self.learn_plan_revision(&plan, revision);
                }
            }
            Err(error) => tracing::warn!(error = %error, "plan revisions not read; records cached in redis trusted"),
        }
    }

    fn evict(&self, tenant_id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut local) = self.local.lock() {
            local.retain(|_, entry| entry.tenant_id != tenant_id);
        }
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut local) = self.local.lock() {
            local.clear();
        }
    }

    /// The cached entry of `key`; on a miss, waits for the turn to fill it (while another
    /// request fills it) and looks again, so that only one request per key reads the source.
    /// A miss returns the turn (`None` if the turn could not be taken), which the caller
    /// holds until it has stored what it read.
    async fn lookup(&self, key: &CacheKey) -> Lookup<'_> {
        if let Some(entry) = self.cached(key) {
            return Lookup::Hit(entry);
        }
        let Some(lock) = self.fills.lock().ok().map(|mut fills| fills.entry(key.clone()).or_default().clone()) else {
            return Lookup::Miss(None);
        };
        let guard = lock.lock_owned().await;
        let turn = FillTurn { fills: &self.fills, key: key.clone(), _guard: guard };
        match self.cached(key) {
            Some(entry) => Lookup::Hit(entry),
            None => Lookup::Miss(Some(turn)),
        }
    }

    fn cached(&self, key: &CacheKey) -> Option<Entry> {
        let live = self.live();
        let local = self.local.lock().ok()?;
        let entry = local
            .get(key)
            .filter(|entry| {
                let ttl = if live { entry.trusted_for } else { DEGRADED_TTL.min(entry.trusted_for) };
                entry.inserted.elapsed() < ttl
            })
            .cloned();
        if entry.is_some() {
            self.local_hits.fetch_add(1, Ordering::Relaxed);
        }
        entry
    }

    /// Stores `value`, just read from PostgreSQL: in Redis under `redis_key` for the other
    /// replicas, then in process. A value Redis did not take (it failed, or invalidations are
    /// not flowing) is trusted in process for [`DEGRADED_TTL`] only: a failed command may
    /// mean that this replica's subscription is gone before its listener has noticed, and
    /// the entry's expiry is what fills the shared tier again once Redis answers.
    async fn fill<T: serde::Serialize>(
        &self,
        epoch: u64,
        key: CacheKey,
        owner: Uuid,
        redis_key: &RedisKey,
        record: &T,
        value: CacheValue,
    ) {
        let json = serde_json::to_string(record);
        let shared = self.live()
            && self.epoch.load(Ordering::Acquire) == epoch
            && match json {
                Ok(json) => self.redis.set(redis_key, &json, self.ttl).await,
                Err(_) => false,
            };
        let trusted_for = if shared { self.ttl } else { DEGRADED_TTL.min(self.ttl) };
        self.store_for(epoch, key, owner, value, trusted_for);
    }

    /// Stores `value` in process for the full TTL.
    fn store(&self, epoch: u64, key: CacheKey, tenant_id: Uuid, value: CacheValue) {
        self.store_for(epoch, key, tenant_id, value, self.ttl);
    }

    fn store_for(&self, epoch: u64, key: CacheKey, tenant_id: Uuid, value: CacheValue, trusted_for: Duration) {
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        // An invalidation ran while this value was being read: it may be stale.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if local.len() >= MAX_LOCAL_ENTRIES {
            local.retain(|_, entry| entry.inserted.elapsed() < entry.trusted_for);
            if local.len() >= MAX_LOCAL_ENTRIES {
                local.clear();
            }
        }
        local.insert(key, Entry { tenant_id, value, inserted: Instant::now(), trusted_for });
    }

    /// Receives invalidations until `stop` is cancelled, resubscribing after failures.
    pub async fn listen(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Some(mut messages) = self.redis.subscribe(INVALIDATION_CHANNEL).await {
                self.clear();
                self.load_plan_revisions().await;
                self.subscribed.store(true, Ordering::Relaxed);
                tracing::info!("receiving cache invalidations");
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => match message.get_payload::<String>().ok().as_deref().map(announced) {
                                Some(Announced::Tenant(tenant_id)) => self.evict(tenant_id),
                                Some(Announced::Plan(plan, revision)) => self.learn_plan_revision(plan, revision),
                                Some(Announced::Unknown) | None => {}
                            },
                            None => break,
                        },
                    }
                }
                self.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!("cache invalidations interrupted; caching degraded until resubscribed");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// The prefix of a plan's announcement, `plan:<name>:<revision>` (a plan's name is a slug,
/// without `:`; a tenant's or operator's announcement is a bare UUID).
const PLAN_ANNOUNCEMENT: &str = "plan:";

/// What an invalidation message announces.
#[derive(Debug, PartialEq, Eq)]
enum Announced<'m> {
    /// A change to a tenant (or operator): evict what is cached under its id.
    Tenant(Uuid),
    /// A change to a plan, now at this revision.
    Plan(&'m str, i64),
    /// Something this build does not know (ignored).
    Unknown,
}

fn announced(message: &str) -> Announced<'_> {
    if let Some(plan) = message.strip_prefix(PLAN_ANNOUNCEMENT) {
        let parsed = plan.rsplit_once(':').and_then(|(name, revision)| Some((name, revision.parse().ok()?)));
        return parsed.map_or(Announced::Unknown, |(name, revision)| Announced::Plan(name, revision));
    }
    Uuid::try_parse(message).map_or(Announced::Unknown, Announced::Tenant)
}

/// What [`TenantResolver::lookup`] found.
enum Lookup<'r> {
    Hit(Entry),
    Miss(Option<FillTurn<'r>>),
}

/// The turn to fill one key; other requests missing it wait until this is dropped.
struct FillTurn<'r> {
    fills: &'r Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
    key: CacheKey,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FillTurn<'_> {
    fn drop(&mut self) {
        // The map and this turn's guard hold the lock; anyone else holding it is waiting.
        if let Ok(mut fills) = self.fills.lock()
            && fills.get(&self.key).is_some_and(|lock| Arc::strong_count(lock) <= 2)
        {
            fills.remove(&self.key);
        }
    }
}

/// The record of a tenant from what [`db::tenants::resolved_by_id`] read: the plan's limits
/// with the tenant's overrides.
fn record_of(tenant_id: Uuid, stored: db::tenants::ResolvedRow) -> Result<TenantRecord> {
    let state = TenantState::parse(&stored.state)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("tenant {tenant_id} has unknown state {:?}", stored.state)))?;
    let unreadable = || Error::internal(anyhow::anyhow!("tenant {tenant_id} has limits tenantd cannot read"));
    let plan = match &stored.plan_limits {
        Some(limits) => Limits::from_json(limits).ok_or_else(unreadable)?,
        None => Limits::default(),
    };
    let overrides = Limits::from_json(&stored.limit_overrides).ok_or_else(unreadable)?;
    let limits = plan.overridden_by(&overrides);
    let tier = IsolationTier::parse(&stored.isolation_tier).ok_or_else(|| {
        Error::internal(anyhow::anyhow!("tenant {tenant_id} has unknown tier {:?}", stored.isolation_tier))
    })?;
    let schema_current = tier == IsolationTier::Pooled
        || stored.schema_version.as_deref() == Some(db::tenant_schema::latest_schema_version());
    Ok(TenantRecord {
        state,
        limits: limits.rate_limits(),
        tier,
        schema_current,
        plan: stored.plan,
        quotas: limits.quotas,
        limits_changed_at: Some(
            stored.plan_update_time.map_or(stored.update_time, |plan| plan.max(stored.update_time)),
        ),
        plan_revision: stored.plan_revision,
    })
}

/// Makes every replica forget its cached record of `tenant_id`, from outside a server (as
/// [`TenantResolver::invalidate`] does from inside one): deletes the shared record in Redis
/// and announces the tenant on [`INVALIDATION_CHANNEL`]. `tenantd migrate` calls it for
/// every tenant whose schema it migrated, so the record's `schema_current` is read afresh at
/// once rather than after the cache TTL. Without Redis it does nothing (the TTL still ends it).
pub async fn announce_invalidation(redis: &RedisCache, tenant_id: Uuid) {
    redis.delete(&record_key(tenant_id)).await;
    redis.publish(INVALIDATION_CHANNEL, &tenant_id.to_string()).await;
}

fn record_key(tenant_id: Uuid) -> RedisKey {
    RedisKey::for_tenant(tenant_id, &["record"])
}

fn api_key_key(tenant_id: Uuid, key_id: Uuid) -> RedisKey {
    RedisKey::for_tenant(tenant_id, &["api_key", &key_id.to_string()])
}

fn operator_key(operator_id: Uuid) -> RedisKey {
    RedisKey::for_platform(&["operator", &operator_id.to_string()])
}

fn tenant_not_found() -> Error {
    Error::new(Reason::TenantNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_names_a_tenant_or_a_plan_at_a_revision() {
        let tenant = Uuid::now_v7();
        assert_eq!(announced(&tenant.to_string()), Announced::Tenant(tenant));
        assert_eq!(announced("plan:gold-tier:42"), Announced::Plan("gold-tier", 42));
        assert_eq!(announced("plan:gold-tier"), Announced::Unknown);
        assert_eq!(announced("plan:gold:x"), Announced::Unknown);
        assert_eq!(announced("something else"), Announced::Unknown);
    }
}
