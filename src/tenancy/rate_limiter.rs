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
//! - **Leases (decision 0017, "Leases", "Refilled ahead, sized by demand").** For a limit of at
//!   least 100/s, a script call also takes up to 1% of a second's budget for this replica to
//!   admit later requests with, without a Redis call: sized by the replica's demand over the
//!   last 5 ms (none for a sparse stream), refilled in the background before it runs out, and
//!   spendable for 10 ms after its last refill. Leased tokens are counted in Redis first, so a
//!   lease never admits past the limit.
//! - **Warnings (decision 0023).** With a warning window configured, the same script call
//!   also counts the tokens a tenant's limit gave out in a fixed window of Redis time and
//!   reports a crossing of 80% or 100% of the limit times the window, once per threshold
//!   per [`RATE_WARNING_HOLD`] across all replicas. The crossing is handed to a bounded
//!   channel (a full one drops it and counts the drop), never waited for. The local
//!   fallback does not warn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Actor, RateLimit, RateLimits, TenantContext};
use crate::cache::{RedisCache, RedisKey, Script};

/// The GCRA over one or two limits, for `ARGV[1]` requests at once, all or nothing per
/// request, plus a lease of up to `ARGV[2]` more; and, when `ARGV[3]` (a window, in
/// microseconds) is not 0, the tenant's sustained-rate counter for warnings.
///
/// `KEYS[i]` is a limit's key, `ARGV[4 + 2i]` its emission interval and `ARGV[5 + 2i]` its
/// burst, in microseconds and requests. Admits as many of the requests as every limit allows
/// (k); only when all were admitted, also grants a lease of as many more (up to the asked
/// lease) as every limit still allows; advances each limit by both.
///
/// With a window, the last key is the tenant's warning hash: `window` (the index of the fixed
/// window of `ARGV[3]` µs of Redis time it counts), `count` (tokens taken in it: admitted and
/// leased) and `until80` / `until100` (until when a crossing of that threshold is not reported
/// again: `ARGV[5]` µs after the last one). A call whose tokens take the count from below to
/// at or above 80% (bit 1) or 100% (bit 2) of `ARGV[4]` (the tenant's rate times the window)
/// reports the crossing, once per threshold and hold, across all replicas.
///
/// Answers `{k, 0, 0, leased, crossed}` when all were admitted, else
/// `{k, retry_after_micros, i, 0, crossed}`: the limit `i` that refused the rest, and when it
/// admits one more. With one request, no lease and no window this is the one-request GCRA.
static GCRA: Script = Script::new(
    r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local wanted = tonumber(ARGV[1])
local lease_wanted = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local limits = #KEYS
if window > 0 then limits = limits - 1 end
local fit_all = nil
local refused_by = 0
local arrivals = {}
for i = 1, limits do
  local interval = tonumber(ARGV[4 + 2 * i])
  local tolerance = interval * tonumber(ARGV[5 + 2 * i])
  local arrival = tonumber(redis.call('GET', KEYS[i])) or now
  if arrival < now then arrival = now end
  arrivals[i] = arrival
  local fit = math.floor((now + tolerance - arrival) / interval)
  if fit_all == nil or fit < fit_all then
    fit_all = fit
    refused_by = i
  end
end
local admitted = math.min(wanted, math.max(fit_all, 0))
local leased = 0
if admitted == wanted then
  leased = math.max(0, math.min(lease_wanted, fit_all - wanted))
end
local taken = admitted + leased
local crossed = 0
if taken > 0 then
  for i = 1, limits do
    local next_arrival = arrivals[i] + taken * tonumber(ARGV[4 + 2 * i])
    local ttl = math.ceil((next_arrival - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', next_arrival), 'PX', ttl)
  end
  if window > 0 then
    local key = KEYS[#KEYS]
    local budget = tonumber(ARGV[4])
    local hold = tonumber(ARGV[5])
    local index = string.format('%.0f', math.floor(now / window))
    local state = redis.call('HMGET', key, 'window', 'count', 'until80', 'until100')
    local count = 0
    if state[1] == index then count = tonumber(state[2]) or 0 end
    local after = count + taken
    redis.call('HSET', key, 'window', index, 'count', after)
    for bit, percent in ipairs({80, 100}) do
      local mark = math.ceil(budget * percent / 100)
      if count < mark and after >= mark and (tonumber(state[2 + bit]) or 0) <= now then
        redis.call('HSET', key, 'until' .. percent, string.format('%.0f', now + hold))
        crossed = crossed + bit
      end
    end
    redis.call('PEXPIRE', key, math.ceil(math.max(2 * window, hold) / 1000))
  end
end
if admitted == wanted then
  return {wanted, 0, 0, leased, crossed}
end
local interval = tonumber(ARGV[4 + 2 * refused_by])
local tolerance = interval * tonumber(ARGV[5 + 2 * refused_by])
return {admitted, arrivals[refused_by] + (admitted + 1) * interval - tolerance - now, refused_by, 0, crossed}
",
);

/// How long a lease of tokens stays usable in the replica that took it, from its last refill
/// (decision 0017, "Leases"): short, so that tokens a replica took but stopped using are not
/// hoarded from the others for longer than this. Half of it is also the window demand is
/// measured over, which sizes the lease.
pub const LEASE_LIFETIME: Duration = Duration::from_millis(10);

/// The largest lease, as a fraction of a limit's requests per second: 1 in 100 (and never
/// more than its burst), so a lease moves at most 1% of a second's budget to one replica.
const LEASE_FRACTION_OF_RATE: u32 = 100;

/// Most limits the local fallback tracks; past it, the ones that ran out are dropped.
const MAX_LOCAL_LIMITS: usize = 100_000;

/// The thresholds, in percent of a tenant's rate limit sustained over the warning window,
/// whose crossing is a warning (bit 1 and bit 2 of the script's answer).
pub const RATE_WARNING_THRESHOLDS: [u32; 2] = [80, 100];

/// How long after a warning the same tenant's crossing of the same threshold is not
/// reported again: a tenant at its limit all day makes 24 warnings per threshold, not one
/// per window.
pub const RATE_WARNING_HOLD: Duration = Duration::from_secs(3600);

/// A tenant's admitted requests (and leased tokens) in one warning window reached a
/// threshold of its rate limit times the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWarning {
    /// The tenant (with its plan), and the request whose count crossed the threshold (its
    /// event's actor and request id).
    pub context: TenantContext,
    /// The threshold crossed, in percent (one of [`RATE_WARNING_THRESHOLDS`]).
    pub threshold_percent: u32,
    /// The tenant's limit.
    pub limit: RateLimit,
    /// The window the requests were counted in.
    pub window: Duration,
}

/// Where crossings go, and the window they are counted over.
struct WarningSink {
    window: Duration,
    sender: mpsc::Sender<RateWarning>,
}

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
    /// Requests waiting for a script call of their limits.
    batches: Batches,
    /// Tokens Redis granted this replica beyond the requests it counted, and the demand that
    /// sizes them, by batch key: spent locally, without a Redis call, until used up or the
    /// lease lifetime passes; refilled ahead of running out.
    leases: Mutex<HashMap<String, Lease>>,
    /// How long a lease stays usable after its last refill ([`LEASE_LIFETIME`]).
    lease_lifetime: Duration,
    /// Sustained-rate warnings, if on.
    warnings: Option<WarningSink>,
}

/// Tokens already counted in Redis that this replica may admit requests with (decision 0017,
/// "Refilled ahead, sized by demand"), and the demand for them.
struct Lease {
    /// Tokens left to spend.
    remaining: u64,
    /// When the tokens left stop being spendable (the last refill plus the lifetime).
    expires_at: Instant,
    /// A refill is in flight: no second one is started.
    refilling: bool,
    /// Requests counted (from the lease or by Redis) in the demand window begun at
    /// `window_start`, and in the window before it (0 if that one was not the one just before).
    window_start: Instant,
    current: u64,
    last: u64,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Self { remaining: 0, expires_at: now, refilling: false, window_start: now, current: 0, last: 0 }
    }

    /// Counts `requests` at `now` in windows of `window`.
    fn observe(&mut self, now: Instant, window: Duration, requests: u64) {
        let age = now.saturating_duration_since(self.window_start);
        if age >= window {
            self.last = if age < window * 2 { self.current } else { 0 };
            self.current = 0;
            self.window_start = now;
        }
        self.current += requests;
    }

    /// The tokens worth holding: one window's demand (the last window's or, if larger, the
    /// current one's so far) less one, so that a sparse stream, at most one request per window,
    /// gets no lease and wastes nothing; at most `cap`.
    fn target(&self, cap: u64) -> u64 {
        self.last.max(self.current).saturating_sub(1).min(cap)
    }

    /// The tokens left, if they are still spendable at `now`.
    fn spendable(&self, now: Instant) -> u64 {
        if self.expires_at > now { self.remaining } else { 0 }
    }
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
            batches: Batches::default(),
            leases: Mutex::new(HashMap::new()),
            lease_lifetime: LEASE_LIFETIME,
            warnings: None,
        }
    }

    /// Keeps leased tokens usable for `lifetime` after each refill instead of
    /// [`LEASE_LIFETIME`] (and measures demand over half of it). For tests that must hold a
    /// lease across slow steps.
    pub fn with_lease_lifetime(mut self, lifetime: Duration) -> Self {
        self.lease_lifetime = lifetime.max(Duration::from_millis(2));
        self
    }

    /// Also counts each tenant's tokens over fixed windows of `window` (in the same script
    /// call) and sends each crossing of a [`RATE_WARNING_THRESHOLDS`] to `sender`, without
    /// waiting: when the channel is full the warning is dropped and counted in
    /// `tenantd_rate_limit_warnings_dropped_total`.
    pub fn with_warnings(mut self, window: Duration, sender: mpsc::Sender<RateWarning>) -> Self {
        self.warnings = Some(WarningSink { window, sender });
        self
    }

    /// Counts one request of `tenant_id` (made with `api_key`, if by a key) against `limits`.
    /// At most one Redis round trip when any limit applies, none otherwise: requests for the
    /// same limits that arrive while a script call for them is in flight wait for it and are
    /// then counted together, by the next call (see [`Batches`]).
    ///
    /// Counts no warnings: there is no request to record them for (see
    /// [`RateLimiter::check_request`]).
    pub async fn check(
        self: &Arc<Self>,
        tenant_id: Uuid,
        api_key: Option<Uuid>,
        limits: &RateLimits,
    ) -> Result<Counted, Refusal> {
        self.count(tenant_id, api_key, limits, None).await
    }

    /// The leased tokens this replica holds for a request of `tenant_id` (made with
    /// `api_key`) under `limits`, spendable now without a Redis call: for tests and diagnostics.
    pub fn leased_tokens(&self, tenant_id: Uuid, api_key: Option<Uuid>, limits: &RateLimits) -> u64 {
        let batch_key = batch_key(&applied_limits(tenant_id, api_key, limits));
        let leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        leases.get(&batch_key).map_or(0, |lease| lease.spendable(Instant::now()))
    }

    /// [`RateLimiter::check`] for a request in `context` (made with an API key if its actor
    /// is one): a warning this request's script call reports is recorded as this request's.
    pub async fn check_request(
        self: &Arc<Self>,
        context: &TenantContext,
        limits: &RateLimits,
    ) -> Result<Counted, Refusal> {
        let api_key = match context.request().actor() {
            Actor::ApiKey { key_id } => Some(*key_id),
            _ => None,
        };
        self.count(context.tenant_id(), api_key, limits, Some(context)).await
    }

    async fn count(
        self: &Arc<Self>,
        tenant_id: Uuid,
        api_key: Option<Uuid>,
        limits: &RateLimits,
        // The request to record a warning for: the leader's, when requests are coalesced.
        request: Option<&TenantContext>,
    ) -> Result<Counted, Refusal> {
        let applied = applied_limits(tenant_id, api_key, limits);
        if applied.is_empty() {
            return Ok(Counted::Unlimited);
        }
        // Leased tokens first: Redis counted them already, a remembered refusal or not.
        let batch_key = batch_key(&applied);
        let most = lease_size(&applied);
        if self.spend_lease(tenant_id, request, &applied, &batch_key, 1, most) == 1 {
            return Ok(Counted::Shared);
        }
        if let Some(refusal) = self.known_refusal(&applied) {
            return Err(refusal);
        }
        let (sender, mut receiver) = oneshot::channel();
        let leading = self.batches.join(&batch_key, sender);
        if !leading {
            // Bounded: a leader slower than its Redis calls' timeouts cannot hold a request.
            let wait = self.redis.operation_timeout() * 4 + Duration::from_millis(10);
            let turn = match tokio::time::timeout(wait, &mut receiver).await {
                Ok(turn) => turn.ok(),
                Err(_elapsed) => {
                    // Closed first, so that a lead handed over from now on goes to the next in
                    // line; one handed over already is taken, never dropped.
                    receiver.close();
                    receiver.try_recv().ok()
                }
            };
            match turn {
                Some(Turn::Verdict(verdict)) => return verdict,
                Some(Turn::Lead) => {}
                Some(Turn::Fallback) | None => return self.check_locally(&applied),
            }
        }
        let mut turn = LeaderTurn { batches: &self.batches, key: &batch_key, others: self.batches.take(&batch_key) };
        let wanted = turn.others.len() + 1;
        // Those queued while the last call was in flight first spend the lease it brought.
        let from_lease = self.spend_lease(tenant_id, request, &applied, &batch_key, wanted, most);
        let outcome = match wanted - from_lease {
            0 => Some((0, None, 0)),
            rest => {
                let lease = self.lease_to_ask(&batch_key, rest, most);
                self.ask_redis(tenant_id, request, &applied, rest, lease).await
            }
        };
        let others = std::mem::take(&mut turn.others);
        drop(turn);
        let Some((admitted, refusal, leased)) = outcome else {
            for (index, other) in others.into_iter().enumerate() {
                let _ = other.send(if index + 1 < from_lease {
                    Turn::Verdict(Ok(Counted::Shared))
                } else {
                    Turn::Fallback
                });
            }
            return if from_lease > 0 { Ok(Counted::Shared) } else { self.check_locally(&applied) };
        };
        if leased > 0 {
            self.store_lease(&batch_key, leased);
        }
        let verdict = |index: usize| match refusal {
            Some(refusal) if index >= from_lease + admitted => Err(refusal),
            _ => Ok(Counted::Shared),
        };
        for (index, other) in others.into_iter().enumerate() {
            let _ = other.send(Turn::Verdict(verdict(index + 1)));
        }
        verdict(0)
    }

    /// Runs the script for `wanted` requests and a lease of up to `lease` tokens: how many
    /// were admitted, the refusal of the rest if not all, and how many tokens were leased;
    /// `None` if Redis did not answer (count locally).
    async fn ask_redis(
        &self,
        tenant_id: Uuid,
        request: Option<&TenantContext>,
        applied: &[(LimitedBy, RedisKey, RateLimit)],
        wanted: usize,
        lease: u64,
    ) -> Option<(usize, Option<Refusal>, u64)> {
        let mut keys: Vec<RedisKey> = applied.iter().map(|(_, key, _)| key.clone()).collect();
        let mut args = Vec::with_capacity(5 + 2 * applied.len());
        args.push(u64::try_from(wanted).unwrap_or(u64::MAX));
        args.push(lease);
        let warned = request.and_then(|request| Some((request, self.warned_limit(applied)?)));
        match warned {
            Some((_, (window, limit))) => {
                keys.push(RedisKey::for_tenant(tenant_id, &["rate", "warning"]));
                let window_micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
                let budget = (u128::from(limit.per_second) * window.as_millis()).div_ceil(1000).max(1);
                let hold_micros = u64::try_from(RATE_WARNING_HOLD.as_micros()).unwrap_or(u64::MAX);
                args.extend([window_micros, u64::try_from(budget).unwrap_or(u64::MAX), hold_micros]);
            }
            None => args.extend([0, 0, 0]),
        }
        args.extend(applied.iter().flat_map(|(_, _, limit)| [emission_interval_micros(limit), u64::from(limit.burst)]));
        let reply = self.redis.eval::<Vec<i64>>(&GCRA, &keys, &args).await?;
        let [admitted, retry_after, index, leased, crossed] = reply.as_slice() else {
            return None;
        };
        if let Some((request, (window, limit))) = warned
            && *crossed != 0
        {
            self.report_crossings(request, *crossed, limit, window);
        }
        let admitted = usize::try_from(*admitted).unwrap_or(0).min(wanted);
        if admitted == wanted {
            return Some((admitted, None, u64::try_from(*leased).unwrap_or(0)));
        }
        let refused = usize::try_from(*index).ok().and_then(|index| index.checked_sub(1));
        let (limited_by, key, limit) = refused.and_then(|index| applied.get(index)).or(applied.first())?;
        let retry_after = Duration::from_micros(u64::try_from(*retry_after).unwrap_or(0));
        let refusal = Refusal { limited_by: *limited_by, limit: *limit, retry_after };
        self.remember_refusal(key, refusal);
        Some((admitted, Some(refusal), 0))
    }

    /// The window and tenant limit warnings are counted for, if warnings are on and the
    /// tenant's limit is among `applied` (a key's own limit is not warned about).
    fn warned_limit(&self, applied: &[(LimitedBy, RedisKey, RateLimit)]) -> Option<(Duration, RateLimit)> {
        let sink = self.warnings.as_ref()?;
        let (_, _, limit) = applied.iter().find(|(limited_by, _, _)| *limited_by == LimitedBy::Tenant)?;
        Some((sink.window, *limit))
    }

    /// Hands each threshold whose bit is set in `crossed` to the warning channel, without
    /// waiting: a full channel drops the warning, counted.
    fn report_crossings(&self, request: &TenantContext, crossed: i64, limit: RateLimit, window: Duration) {
        let Some(sink) = &self.warnings else {
            return;
        };
        for (bit, threshold_percent) in RATE_WARNING_THRESHOLDS.into_iter().enumerate() {
            if crossed & (1 << bit) == 0 {
                continue;
            }
            let warning = RateWarning { context: request.clone(), threshold_percent, limit, window };
            if sink.sender.try_send(warning).is_err() {
                crate::metrics::record_rate_warning_dropped();
                tracing::warn!(tenant.id = %request.tenant_id(), threshold_percent, "rate-limit warning dropped: its queue is full");
            }
        }
    }

    /// Admits up to `wanted` requests from this replica's unexpired lease for `batch_key`:
    /// how many it had tokens for. When the tokens left fall to half of what the demand needs
    /// (or the lease is past half its lifetime), a refill up to `most` tokens starts in the
    /// background, while the tokens left are still spent: requests do not wait for it.
    fn spend_lease(
        self: &Arc<Self>,
        tenant_id: Uuid,
        request: Option<&TenantContext>,
        applied: &[(LimitedBy, RedisKey, RateLimit)],
        batch_key: &str,
        wanted: usize,
        most: u64,
    ) -> usize {
        let now = Instant::now();
        let window = self.lease_lifetime / 2;
        let (spent, refill) = {
            let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(lease) = leases.get_mut(batch_key) else {
                return 0;
            };
            let spendable = lease.spendable(now);
            let spent = wanted.min(usize::try_from(spendable).unwrap_or(usize::MAX));
            if spent == 0 {
                return 0;
            }
            lease.remaining = spendable - spent as u64;
            lease.observe(now, window, spent as u64);
            let target = lease.target(most);
            let due = lease.remaining * 2 <= target || lease.expires_at <= now + window;
            let refill = (!lease.refilling && lease.remaining > 0 && lease.remaining < target && due)
                .then(|| target - lease.remaining);
            if refill.is_some() {
                lease.refilling = true;
            }
            (spent, refill)
        };
        if let Some(tokens) = refill {
            self.refill(tenant_id, request, applied, batch_key, tokens);
        }
        spent
    }

    /// Asks Redis, without a request waiting, for `tokens` more for `batch_key`'s lease. Leased
    /// tokens are counted in Redis before they are spent, as a call's own are.
    fn refill(
        self: &Arc<Self>,
        tenant_id: Uuid,
        request: Option<&TenantContext>,
        applied: &[(LimitedBy, RedisKey, RateLimit)],
        batch_key: &str,
        tokens: u64,
    ) {
        let (limiter, request, applied, batch_key) =
            (Arc::clone(self), request.cloned(), applied.to_vec(), batch_key.to_owned());
        tokio::spawn(async move {
            // Cleared however the call ends, so a later refill can start.
            let _refilling = Refilling { limiter: &limiter, batch_key: &batch_key };
            if let Some((_, _, leased)) = limiter.ask_redis(tenant_id, request.as_ref(), &applied, 0, tokens).await
                && leased > 0
            {
                limiter.store_lease(&batch_key, leased);
            }
        });
    }

    /// Counts `requests` about to be sent to Redis for `batch_key`: the lease to ask for with
    /// them (what the demand needs, at most `most`).
    fn lease_to_ask(&self, batch_key: &str, requests: usize, most: u64) -> u64 {
        if most == 0 {
            return 0;
        }
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if leases.len() >= MAX_LOCAL_LIMITS && !leases.contains_key(batch_key) {
            let window = self.lease_lifetime / 2;
            leases
                .retain(|_, lease| lease.refilling || lease.expires_at > now || lease.window_start + window * 2 > now);
        }
        let lease = leases.entry(batch_key.to_owned()).or_insert_with(|| Lease::new(now));
        lease.observe(now, self.lease_lifetime / 2, requests as u64);
        lease.target(most).saturating_sub(lease.spendable(now))
    }

    /// Adds `tokens` Redis just leased to `batch_key`'s lease (whose tokens left, if still
    /// spendable, stay), spendable for a lifetime from now.
    fn store_lease(&self, batch_key: &str, tokens: u64) {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lease = leases.entry(batch_key.to_owned()).or_insert_with(|| Lease::new(now));
        lease.remaining = lease.spendable(now) + tokens;
        lease.expires_at = now + self.lease_lifetime;
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

/// What a waiting request is told.
enum Turn {
    /// Counted by the leader's call.
    Verdict(Result<Counted, Refusal>),
    /// Lead the next call, for yourself and whoever waits by then.
    Lead,
    /// Redis did not answer: count locally.
    Fallback,
}

/// Requests coalesced by their limits (decision 0017, "Coalescing"): per set of limits, at most
/// one script call is in flight; requests arriving meanwhile queue, and when the call returns,
/// its leader answers those it counted and hands the lead to the first of the queue, who counts
/// itself and everyone queued by then in one call. Under concurrency a tenant's requests thus
/// share round trips (each call counts n requests atomically, as n calls would); a lone request
/// still makes exactly one call.
#[derive(Default)]
struct Batches {
    pending: Mutex<HashMap<String, Vec<oneshot::Sender<Turn>>>>,
}

impl Batches {
    /// Queues a request for `key`; `true` (not queued) if no call for it is in flight, so the
    /// caller leads one.
    fn join(&self, key: &str, sender: oneshot::Sender<Turn>) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match pending.get_mut(key) {
            Some(queue) => {
                queue.push(sender);
                false
            }
            None => {
                pending.insert(key.to_owned(), Vec::new());
                true
            }
        }
    }

    /// Everyone queued for `key`, for the leader's call.
    fn take(&self, key: &str) -> Vec<oneshot::Sender<Turn>> {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.get_mut(key).map(std::mem::take).unwrap_or_default()
    }

    /// The leader's call returned (or was dropped): the lead passes to the first request still
    /// queued for `key`, or the key has no call in flight any more. `unanswered` (a dropped
    /// leader's batch) queue again, ahead of the rest.
    fn hand_over(&self, key: &str, unanswered: Vec<oneshot::Sender<Turn>>) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(queue) = pending.get_mut(key) else {
            return;
        };
        let mut waiting: Vec<_> = unanswered.into_iter().chain(std::mem::take(queue)).collect();
        while !waiting.is_empty() {
            let next = waiting.remove(0);
            if next.send(Turn::Lead).is_ok() {
                *queue = waiting;
                return;
            }
        }
        pending.remove(key);
    }
}

/// A refill in flight for a batch key; clearing its mark on drop.
struct Refilling<'a> {
    limiter: &'a RateLimiter,
    batch_key: &'a str,
}

impl Drop for Refilling<'_> {
    fn drop(&mut self) {
        let mut leases = self.limiter.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lease) = leases.get_mut(self.batch_key) {
            lease.refilling = false;
        }
    }
}

/// The lead of one call for a set of limits; handing it over on drop, so a request cancelled
/// mid-call does not strand the requests queued behind it.
struct LeaderTurn<'a> {
    batches: &'a Batches,
    key: &'a str,
    /// The queued requests this call counts (taken back before they are answered).
    others: Vec<oneshot::Sender<Turn>>,
}

impl Drop for LeaderTurn<'_> {
    fn drop(&mut self) {
        self.batches.hand_over(self.key, std::mem::take(&mut self.others));
    }
}

/// The key requests are coalesced by: their limits' keys and values.
fn batch_key(applied: &[(LimitedBy, RedisKey, RateLimit)]) -> String {
    let mut key = String::with_capacity(96 * applied.len());
    for (_, redis_key, limit) in applied {
        key.push_str(redis_key.as_str());
        key.push('=');
        key.push_str(&limit.per_second.to_string());
        key.push('/');
        key.push_str(&limit.burst.to_string());
        key.push(';');
    }
    key
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

/// The largest lease a replica holds: the smallest of the limits' rates / 100 and bursts, so 0
/// (no lease: every request asks Redis) for any limit below 100 per second.
fn lease_size(applied: &[(LimitedBy, RedisKey, RateLimit)]) -> u64 {
    applied
        .iter()
        .map(|(_, _, limit)| u64::from((limit.per_second / LEASE_FRACTION_OF_RATE).min(limit.burst)))
        .min()
        .unwrap_or(0)
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
        let limiter = Arc::new(RateLimiter::new(redis, 2));
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
