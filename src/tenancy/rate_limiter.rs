//! Request-rate limiting (decision 0017): a GCRA (generic cell rate algorithm) per tenant
//! and per API key, shared by every replica through one Redis script call per request, with
//! a per-replica fallback while Redis is unavailable.
//!
//! - **Shared (Redis up).** The script reads the tenant's and the key's theoretical arrival
//!   times (`t:{<tenant>}:rate:tenant`, `t:{<tenant>}:rate:api_key:<key>`: one slot, as
//!   the tenant id is the hash tag), admits only if both allow, and then advances both, in
//!   one atomic call timed by the Redis server's clock (so replicas' clocks do not matter).
//!   A refusal says when to retry: the time until the limit that refused admits one more.
//! - **Local (Redis down or failing).** The same algorithm in process memory, with each limit
//!   divided by the configured replica count (rounded up, at least 1 per second and a burst
//!   of 1), so that the replicas together admit about the shared limit: never unlimited, never
//!   refusing everyone. When Redis answers again, requests are counted there again from
//!   the state Redis kept (or an empty one, once its keys expired); the local state is
//!   dropped when it has run out. The switch can admit at most one extra burst per limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{RateLimit, RateLimits};
use crate::cache::{RedisCache, RedisKey, Script};

/// The GCRA over one or two limits, all or nothing. `KEYS[i]` is a limit's key, `ARGV[2i-1]`
/// its emission interval and `ARGV[2i]` its burst, in microseconds and requests. Answers
/// `{1, 0, 0}` when admitted, else `{0, retry_after_micros, i}` for the limit `i` that refused.
static GCRA: Script = Script::new(
    r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local next_arrivals = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = interval * tonumber(ARGV[2 * i])
  local arrival = tonumber(redis.call('GET', KEYS[i])) or now
  if arrival < now then arrival = now end
  local next_arrival = arrival + interval
  local allowed_at = next_arrival - tolerance
  if allowed_at > now then
    return {0, allowed_at - now, i}
  end
  next_arrivals[i] = next_arrival
end
for i = 1, #KEYS do
  local ttl = math.ceil((next_arrivals[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', next_arrivals[i]), 'PX', ttl)
end
return {1, 0, 0}
",
);

/// Most limits the local fallback tracks; past it, the ones that ran out are dropped.
const MAX_LOCAL_LIMITS: usize = 100_000;

/// Which of a request's limits refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedBy {
    /// The tenant's limit (all its requests together).
    Tenant,
    /// The limit of the API key that made the request.
    ApiKey(Uuid),
}

/// A refused request: which limit, the limit itself, and when one more would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused.
    pub limited_by: LimitedBy,
    /// Its value (the shared one, even when the local fallback refused).
    pub limit: RateLimit,
    /// How long until a request would be admitted.
    pub retry_after: Duration,
}

/// Whether a request was counted in Redis or by the local fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// By the shared script in Redis.
    Shared,
    /// In this replica's memory (Redis unavailable).
    Locally,
    /// Not at all: the tenant has no limits.
    Unlimited,
}

/// Admits or refuses data-plane requests by their tenant's and API key's rate limits.
pub struct RateLimiter {
    redis: RedisCache,
    fallback_replicas: u32,
    local: Mutex<LocalLimits>,
    /// Until when each limit is known to refuse, from Redis's last refusal: a request within
    /// that time is refused without a Redis call (Redis would refuse it too: a refusal
    /// changes no state, and no replica can make the limit admit sooner). This keeps a noisy
    /// tenant from costing a Redis round trip per refused request.
    refusing: Mutex<HashMap<String, (Instant, Refusal)>>,
}

impl RateLimiter {
    /// A limiter sharing its counts through `redis`; while Redis is unavailable each limit is
    /// divided by `fallback_replicas` (at least 1) in every replica.
    pub fn new(redis: RedisCache, fallback_replicas: u32) -> Self {
        Self {
            redis,
            fallback_replicas: fallback_replicas.max(1),
            local: Mutex::new(LocalLimits::default()),
            refusing: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `tenant_id` (made with `api_key`, if by a key) against `limits`.
    /// One Redis round trip when any limit applies, none otherwise.
    pub async fn check(&self, tenant_id: Uuid, api_key: Option<Uuid>, limits: &RateLimits) -> Result<Counted, Refusal> {
        let applied = applied_limits(tenant_id, api_key, limits);
        if applied.is_empty() {
            return Ok(Counted::Unlimited);
        }
        if let Some(refusal) = self.known_refusal(&applied) {
            return Err(refusal);
        }
        let keys: Vec<RedisKey> = applied.iter().map(|(_, key, _)| key.clone()).collect();
        let args: Vec<u64> = applied
            .iter()
            .flat_map(|(_, _, limit)| [emission_interval_micros(limit), u64::from(limit.burst)])
            .collect();
        let Some(reply) = self.redis.eval::<Vec<i64>>(&GCRA, &keys, &args).await else {
            return self.check_locally(&applied);
        };
        match reply.as_slice() {
            [1, ..] => Ok(Counted::Shared),
            [0, retry_after, index] => {
                let refused = usize::try_from(*index).ok().and_then(|index| index.checked_sub(1));
                let Some((limited_by, _, limit)) = refused.and_then(|index| applied.get(index)).or(applied.first())
                else {
                    return Ok(Counted::Unlimited);
                };
                let retry_after = Duration::from_micros(u64::try_from(*retry_after).unwrap_or(0));
                let refusal = Refusal { limited_by: *limited_by, limit: *limit, retry_after };
                if let Some((_, key, _)) = refused.and_then(|index| applied.get(index)) {
                    self.remember_refusal(key, refusal);
                }
                Err(refusal)
            }
            _ => self.check_locally(&applied),
        }
    }

    /// A refusal Redis gave for one of `applied` that still holds, with its remaining delay.
    fn known_refusal(&self, applied: &[(LimitedBy, RedisKey, RateLimit)]) -> Option<Refusal> {
        let now = Instant::now();
        let refusing = self.refusing.lock().ok()?;
        applied.iter().find_map(|(_, key, limit)| {
            let (until, refusal) = refusing.get(key.as_str())?;
            // A changed limit (a new plan) is asked of Redis again.
            (*until > now && refusal.limit == *limit).then(|| Refusal { retry_after: *until - now, ..*refusal })
        })
    }

    fn remember_refusal(&self, key: &RedisKey, refusal: Refusal) {
        let now = Instant::now();
        if let Ok(mut refusing) = self.refusing.lock() {
            if refusing.len() >= MAX_LOCAL_LIMITS {
                refusing.retain(|_, (until, _)| *until > now);
            }
            refusing.insert(key.as_str().to_owned(), (now + refusal.retry_after, refusal));
        }
    }

    /// The local fallback: the same GCRA, each limit divided among the replicas.
    fn check_locally(&self, applied: &[(LimitedBy, RedisKey, RateLimit)]) -> Result<Counted, Refusal> {
        let now = Instant::now();
        let mut local = match self.local.lock() {
            Ok(local) => local,
            Err(poisoned) => poisoned.into_inner(),
        };
        local.prune(now);
        let mut next_arrivals = Vec::with_capacity(applied.len());
        for (limited_by, key, limit) in applied {
            let share = share_of(limit, self.fallback_replicas);
            let interval = Duration::from_micros(emission_interval_micros(&share));
            let tolerance = interval * share.burst;
            let arrival = local.arrivals.get(key.as_str()).copied().filter(|arrival| *arrival > now).unwrap_or(now);
            let next_arrival = arrival + interval;
            let allowed_at = next_arrival.checked_sub(tolerance).unwrap_or(now);
            if allowed_at > now {
                return Err(Refusal { limited_by: *limited_by, limit: *limit, retry_after: allowed_at - now });
            }
            next_arrivals.push((key.as_str().to_owned(), next_arrival));
        }
        local.arrivals.extend(next_arrivals);
        Ok(Counted::Locally)
    }
}

/// The theoretical arrival times of the local fallback, by limit key.
#[derive(Default)]
struct LocalLimits {
    arrivals: HashMap<String, Instant>,
}

impl LocalLimits {
    /// Drops limits that ran out (a limit past its arrival time is as good as new) once the
    /// map is large.
    fn prune(&mut self, now: Instant) {
        if self.arrivals.len() >= MAX_LOCAL_LIMITS {
            self.arrivals.retain(|_, arrival| *arrival > now);
        }
    }
}

/// The limits that apply to a request, tenant first, each with its Redis key.
fn applied_limits(
    tenant_id: Uuid,
    api_key: Option<Uuid>,
    limits: &RateLimits,
) -> Vec<(LimitedBy, RedisKey, RateLimit)> {
    let mut applied = Vec::with_capacity(2);
    if let Some(limit) = limits.tenant {
        applied.push((LimitedBy::Tenant, RedisKey::for_tenant(tenant_id, &["rate", "tenant"]), limit));
    }
    if let (Some(limit), Some(key_id)) = (limits.api_key, api_key) {
        let key = RedisKey::for_tenant(tenant_id, &["rate", "api_key", &key_id.to_string()]);
        applied.push((LimitedBy::ApiKey(key_id), key, limit));
    }
    applied
}

/// Microseconds between two requests at the sustained rate.
fn emission_interval_micros(limit: &RateLimit) -> u64 {
    1_000_000 / u64::from(limit.per_second.max(1))
}

/// One replica's share of `limit` among `replicas`: each part rounded up, at least 1.
fn share_of(limit: &RateLimit, replicas: u32) -> RateLimit {
    RateLimit { per_second: limit.per_second.div_ceil(replicas).max(1), burst: limit.burst.div_ceil(replicas).max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_share_is_rounded_up_and_never_zero() {
        let limit = RateLimit { per_second: 50, burst: 5 };
        assert_eq!(share_of(&limit, 1), limit);
        assert_eq!(share_of(&limit, 3), RateLimit { per_second: 17, burst: 2 });
        assert_eq!(share_of(&RateLimit { per_second: 1, burst: 1 }, 10), RateLimit { per_second: 1, burst: 1 });
    }

    #[test]
    fn a_requests_limits_share_the_tenants_hash_tag() {
        let tenant = Uuid::now_v7();
        let key = Uuid::now_v7();
        let limit = RateLimit { per_second: 1, burst: 1 };
        let both = RateLimits { tenant: Some(limit), api_key: Some(limit) };
        let applied = applied_limits(tenant, Some(key), &both);
        let tag = format!("{{{tenant}}}");
        assert_eq!(applied.len(), 2);
        assert!(applied.iter().all(|(_, key, _)| key.as_str().contains(&tag)));
        // A platform caller has no key, and no limits is no check at all.
        assert_eq!(applied_limits(tenant, None, &both).len(), 1);
        assert!(applied_limits(tenant, Some(key), &RateLimits::default()).is_empty());
    }

    #[tokio::test]
    async fn the_local_fallback_admits_the_burst_then_refuses_with_a_retry_delay() {
        let (_, redis, _) = crate::api::gateway::testing::unreachable_dependencies();
        let limiter = RateLimiter::new(redis, 2);
        let tenant = Uuid::now_v7();
        let limits = RateLimits { tenant: Some(RateLimit { per_second: 10, burst: 4 }), api_key: None };
        // Redis listens nowhere: the share of one of two replicas is a burst of 2 at 5/s.
        for _ in 0..2 {
            assert_eq!(limiter.check(tenant, None, &limits).await, Ok(Counted::Locally));
        }
        let refusal = limiter.check(tenant, None, &limits).await.expect_err("past the local burst");
        assert_eq!(refusal.limited_by, LimitedBy::Tenant);
        assert!(refusal.retry_after > Duration::ZERO && refusal.retry_after <= Duration::from_millis(200));
        // Another tenant is not affected.
        assert_eq!(limiter.check(Uuid::now_v7(), None, &limits).await, Ok(Counted::Locally));
    }
}
