//! Per-tenant usage, in the spirit of Citus's `citus_stat_tenants`: every admitted
//! data-plane request is counted in memory (no I/O on the request path), and every few
//! seconds each replica adds its counts to the tenant's Redis hash `t:{<id>}:usage`
//! (`requests`, and `last_active_ms` kept at its maximum), one round trip per active
//! tenant. Counts that cannot be flushed (Redis down) are kept and flushed later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cache::{RedisCache, RedisKey};
use crate::error::{Error, Reason, Result};

/// Adds ARGV[2] requests and raises `last_active_ms` to ARGV[1] if it is later.
const BUMP: &str = "local last = redis.call('HGET', KEYS[1], 'last_active_ms') \
    if (not last) or tonumber(last) < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'last_active_ms', ARGV[1]) end \
    return redis.call('HINCRBY', KEYS[1], 'requests', ARGV[2])";

/// Pending counts of one tenant.
#[derive(Debug, Clone, Copy)]
struct Pending {
    requests: u64,
    last_active: DateTime<Utc>,
}

/// A tenant's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUsage {
    /// Requests admitted.
    pub request_count: u64,
    /// Last request.
    pub last_active_time: Option<DateTime<Utc>>,
}

/// Counts requests per tenant and flushes them to Redis.
pub struct UsageCounter {
    redis: RedisCache,
    pending: Mutex<HashMap<Uuid, Pending>>,
}

impl UsageCounter {
    /// A counter flushing to `redis`.
    pub fn new(redis: RedisCache) -> Self {
        Self { redis, pending: Mutex::new(HashMap::new()) }
    }

    /// Counts one admitted request for a tenant (in memory only).
    pub fn record(&self, tenant_id: Uuid) {
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending.entry(tenant_id).or_insert(Pending { requests: 0, last_active: Utc::now() });
            entry.requests += 1;
            entry.last_active = Utc::now();
        }
    }

    /// Requests counted for a tenant and not flushed yet.
    #[cfg(test)]
    pub(crate) fn pending_requests(&self, tenant_id: Uuid) -> u64 {
        self.pending.lock().ok().and_then(|pending| pending.get(&tenant_id).map(|counts| counts.requests)).unwrap_or(0)
    }

    /// Adds pending counts to Redis; what fails is kept for the next flush.
    pub async fn flush(&self) {
        let batch = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        for (tenant_id, counts) in batch {
            let mut command = redis::cmd("EVAL");
            command
                .arg(BUMP)
                .arg(1)
                .arg(usage_key(tenant_id).as_str())
                .arg(counts.last_active.timestamp_millis())
                .arg(counts.requests);
            if self.redis.run::<i64>(command).await.is_none() {
                self.keep(tenant_id, counts);
            }
        }
    }

    fn keep(&self, tenant_id: Uuid, counts: Pending) {
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending.entry(tenant_id).or_insert(Pending { requests: 0, last_active: counts.last_active });
            entry.requests += counts.requests;
            entry.last_active = entry.last_active.max(counts.last_active);
        }
    }

    /// A tenant's usage as stored in Redis, plus what this replica has not flushed yet.
    pub async fn usage(&self, tenant_id: Uuid) -> Result<TenantUsage> {
        let mut command = redis::cmd("HMGET");
        command.arg(usage_key(tenant_id).as_str()).arg("requests").arg("last_active_ms");
        let (requests, last_active_ms): (Option<u64>, Option<i64>) =
            self.redis.run(command).await.ok_or_else(|| {
                Error::unavailable(Reason::RedisUnavailable, anyhow::anyhow!("usage is kept in Redis"))
            })?;
        let mut usage = TenantUsage {
            request_count: requests.unwrap_or(0),
            last_active_time: last_active_ms.and_then(DateTime::from_timestamp_millis),
        };
        if let Some(pending) = self.pending.lock().ok().and_then(|pending| pending.get(&tenant_id).copied()) {
            usage.request_count += pending.requests;
            usage.last_active_time = usage.last_active_time.max(Some(pending.last_active));
        }
        Ok(usage)
    }

    /// Flushes every `interval` until `stop` is cancelled, then once more.
    pub async fn run(&self, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => self.flush().await,
                () = stop.cancelled() => break,
            }
        }
        self.flush().await;
    }
}

fn usage_key(tenant_id: Uuid) -> RedisKey {
    RedisKey::for_tenant(tenant_id, &["usage"])
}
