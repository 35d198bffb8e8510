//! Rate limits at the boundary (decision 0017): a tenant's and an API key's request rates,
//! shared by replicas through Redis, refused with RESOURCE_EXHAUSTED `RATE_LIMITED` before any
//! database work, and limited per replica while Redis is down.
//!
//! Each test runs its servers on a Redis of its own, so that it can wait for them to
//! subscribe to invalidations (a resolver reads tenant records from Redis only then) and
//! count keys without other tests' traffic. The limits are set by writing the tenant's
//! record where the resolver caches it (`t:{<id>}:record`) and announcing the change, as
//! an invalidation does.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost_types::value::Kind;
use tenantd::cache::{INVALIDATION_CHANNEL, RedisCache};
use tenantd::config::Config;
use tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient;
use tenantd::proto::{
    ListTenantAuditEventsRequest, ListUsersRequest, PingRequest, Plan, PlanLimits, RequestRate, WatchEventsRequest,
};
use tenantd::tenancy::rate_limiter::{Counted, LimitedBy, RateLimiter};
use tenantd::tenancy::resolver::TenantRecord;
use tenantd::tenancy::{RateLimit, RateLimits, TenantState};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::{ApiKeyScope, Metadata, TestApp, spawn_app_with, start, test_config, unique_slug};
use crate::throwaway::ThrowawayRedis;

type UsersClient = tenantd::proto::user_service_client::UserServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Metadata>,
>;

/// Gives `tenant_id` the rate limits `limits` on every server using `redis`.
pub(crate) async fn set_limits(redis: &ThrowawayRedis, tenant_id: &str, limits: RateLimits) {
    let record = TenantRecord {
        state: TenantState::Active,
        limits,
        tier: Default::default(),
        schema_current: true,
        plan: None,
        quotas: Default::default(),
        limits_changed_at: None,
        plan_revision: None,
    };
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let key = format!("t:{{{tenant_id}}}:record");
    let json = serde_json::to_string(&record).expect("json");
    let () = redis::cmd("SET").arg(&key).arg(json).arg("EX").arg(600).query_async(&mut connection).await.expect("set");
    let _: i64 =
        redis::cmd("PUBLISH").arg(INVALIDATION_CHANNEL).arg(tenant_id).query_async(&mut connection).await.expect("pub");
}

/// A server on `redis`, subscribed to its invalidations (`replicas` servers in all so far).
pub(crate) async fn server_on(redis: &ThrowawayRedis, database: Option<&str>, replicas: i64) -> TestApp {
    server_with(redis, database, replicas, |_| {}).await
}

/// [`server_on`], with `configure` applied to its settings.
async fn server_with(
    redis: &ThrowawayRedis,
    database: Option<&str>,
    replicas: i64,
    configure: impl Fn(&mut Config),
) -> TestApp {
    let url = redis.url();
    let app = match database {
        None => {
            spawn_app_with(|config| {
                config.redis.url = url.into();
                configure(config);
            })
            .await
        }
        Some(database) => {
            let mut config = test_config(database);
            config.redis.url = url.into();
            configure(&mut config);
            let app = start(database.to_owned(), config).await;
            app.wait_for_status("", ServingStatus::Serving).await;
            app
        }
    };
    app.wait_for_status("redis", ServingStatus::Serving).await;
    redis.wait_for_subscribers(replicas, Duration::from_secs(10)).await;
    app
}

pub(crate) fn ping_client(
    app: &TestApp,
    metadata: Metadata,
) -> DiagnosticsServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Metadata>> {
    DiagnosticsServiceClient::with_interceptor(app.channel.clone(), metadata)
}

/// The QuotaFailure subject and RetryInfo delay of a RATE_LIMITED refusal.
fn refusal(status: &tonic::Status) -> (String, Duration) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.error_info().map(|info| info.reason.as_str()), Some("RATE_LIMITED"));
    let subject = details.quota_failure().and_then(|failure| failure.violations.first()).map(|v| v.subject.clone());
    let delay = details.retry_info().and_then(|info| info.retry_delay);
    (subject.expect("a QuotaFailure violation"), delay.expect("a RetryInfo delay"))
}

#[tokio::test]
async fn a_tenant_past_its_rate_is_refused_with_quota_failure_and_retry_info_and_never_reaches_postgresql() {
    let redis = ThrowawayRedis::start();
    let app = server_on(&redis, None, 1).await;
    let limited = app.create_tenant(&unique_slug("rl")).await.id;
    let unlimited = app.create_tenant(&unique_slug("rl-free")).await.id;
    set_limits(&redis, &limited, RateLimits { tenant: Some(RateLimit { per_second: 1, burst: 3 }), api_key: None })
        .await;

    let mut users = app.users(&limited);
    let before = app.pool_checkouts();
    for attempt in 0..3 {
        users
            .list_users(ListUsersRequest::default())
            .await
            .unwrap_or_else(|s| panic!("within the burst {attempt}: {s:?}"));
    }
    let admitted = app.pool_checkouts();
    assert!(admitted >= before + 3, "admitted requests read PostgreSQL ({before} -> {admitted})");

    for _ in 0..5 {
        let status = users.list_users(ListUsersRequest::default()).await.expect_err("past the burst");
        let (subject, delay) = refusal(&status);
        assert_eq!(subject, format!("tenant:{limited}"));
        assert!(delay > Duration::ZERO && delay <= Duration::from_secs(1), "{delay:?}");
    }
    assert_eq!(app.pool_checkouts(), admitted, "refused requests checked out no database connection");

    // Controls: another tenant is served meanwhile, and the limited one again after the delay.
    app.users(&unlimited).list_users(ListUsersRequest::default()).await.expect("an unlimited tenant is served");
    let status = users.list_users(ListUsersRequest::default()).await.expect_err("still past the burst");
    tokio::time::sleep(refusal(&status).1 + Duration::from_millis(20)).await;
    users.list_users(ListUsersRequest::default()).await.expect("admitted again after the retry delay");
    app.stop().await;
}

#[tokio::test]
async fn an_api_keys_limit_refuses_its_requests_and_its_event_stream_opens_but_not_another_keys() {
    let redis = ThrowawayRedis::start();
    let app = server_on(&redis, None, 1).await;
    let tenant = app.create_tenant(&unique_slug("rl-key")).await.id;
    let (first_id, first) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let (_, second) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let limits = RateLimits {
        tenant: Some(RateLimit { per_second: 1000, burst: 1000 }),
        api_key: Some(RateLimit { per_second: 1, burst: 2 }),
    };
    set_limits(&redis, &tenant, limits).await;

    let mut by_first = ping_client(&app, Metadata::bearer(&first));
    by_first.ping(PingRequest {}).await.expect("the key's burst of 2: first");
    by_first.ping(PingRequest {}).await.expect("the key's burst of 2: second");
    let (subject, _) = refusal(&by_first.ping(PingRequest {}).await.expect_err("past the key's burst"));
    assert_eq!(subject, format!("api_key:{first_id}"));
    let opened = app.events_with(Metadata::bearer(&first)).watch_events(WatchEventsRequest::default()).await;
    let (subject, _) = refusal(&opened.expect_err("the stream's open counts too"));
    assert_eq!(subject, format!("api_key:{first_id}"));

    // Controls: another key of the tenant, and the platform acting for it, are served.
    let mut by_second = ping_client(&app, Metadata::bearer(&second));
    by_second.ping(PingRequest {}).await.expect("another key has its own limit");
    let stream = app.events_with(Metadata::bearer(&second)).watch_events(WatchEventsRequest::default()).await;
    drop(stream.expect("another key opens the stream"));
    ping_client(&app, Metadata::platform().tenant_id(&tenant)).ping(PingRequest {}).await.expect("the platform");
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_admit_the_shared_rate_within_five_percent_over_ten_seconds() {
    admit_the_shared_rate_within_five_percent(RateLimit { per_second: 50, burst: 5 }).await;
}

#[tokio::test]
async fn two_replicas_admit_a_leased_rate_of_400_per_second_within_five_percent_over_ten_seconds() {
    // At 400/s each script call leases min(400 / 100, burst) = 4 tokens: leases must neither
    // overshoot nor, by expiring unused, under-admit by more than 5%.
    admit_the_shared_rate_within_five_percent(RateLimit { per_second: 400, burst: 40 }).await;
}

/// `callers` callers per server of `apps` pinging for `tenant` as fast as they are answered,
/// for `duration`: how many pings were admitted and how many refused (RESOURCE_EXHAUSTED).
async fn drive(apps: &[&TestApp], tenant: &str, callers: u32, duration: Duration) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for app in apps {
        for _ in 0..callers {
            let mut ping = ping_client(app, Metadata::platform().tenant_id(tenant));
            let (admitted, refused) = (admitted.clone(), refused.clone());
            workers.push(tokio::spawn(async move {
                while started.elapsed() < duration {
                    match ping.ping(PingRequest {}).await {
                        Ok(_) => admitted.fetch_add(1, Ordering::Relaxed),
                        Err(status) if status.code() == Code::ResourceExhausted => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(status) => panic!("unexpected {status:?}"),
                    };
                }
            }));
        }
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    (admitted.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// Two replicas on one Redis, callers on both far above `limit` for 10 s: the admitted
/// requests are within ±5% of 10 s of the rate (the burst is in the tolerance).
async fn admit_the_shared_rate_within_five_percent(limit: RateLimit) {
    const WINDOW: Duration = Duration::from_secs(10);
    // Enough callers per replica to offer well over the limit (a debug Ping takes ~1 ms).
    let callers = (limit.per_second / 50).max(3);
    let redis = ThrowawayRedis::start();
    let first = server_on(&redis, None, 1).await;
    let second = server_on(&redis, Some(&first.database), 2).await;
    let tenant = first.create_tenant(&unique_slug("rl-acc")).await.id;
    set_limits(&redis, &tenant, RateLimits { tenant: Some(limit), api_key: None }).await;
    // Both replicas must have read the limits before counting starts: each is seen refusing.
    for app in [&first, &second] {
        let mut ping = ping_client(app, Metadata::platform().tenant_id(&tenant));
        let started = Instant::now();
        while ping.ping(PingRequest {}).await.is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10), "the replica never applied the limit");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the burst refills

    let (admitted, refused) = drive(&[&first, &second], &tenant, callers, WINDOW).await;
    let expected = u64::from(limit.per_second) * WINDOW.as_secs();
    println!(
        "at {}/s: admitted {admitted} (expected {expected} + a burst of {}), refused {refused}, {callers} callers per \
         replica",
        limit.per_second, limit.burst
    );
    assert!(refused > admitted, "the replicas offered well over the limit ({refused} refused)");
    let tolerance = expected / 20;
    assert!(admitted.abs_diff(expected) <= tolerance, "admitted {admitted}, expected {expected} ± {tolerance}");
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}

#[tokio::test]
async fn with_redis_stopped_each_replica_limits_its_share_locally_and_counts_in_redis_again_when_it_returns() {
    let mut redis = ThrowawayRedis::start();
    let cache = RedisCache::new(&redis.url(), None, 2, Duration::from_millis(500)).expect("url");
    assert!(cache.probe().await, "Redis answers");
    let limiter = Arc::new(RateLimiter::new(cache.clone(), 2));
    let tenant = Uuid::now_v7();
    let limits = RateLimits { tenant: Some(RateLimit { per_second: 10, burst: 10 }), api_key: None };
    let counted = |outcome: Result<Counted, _>| outcome.ok();
    // Shared: the whole burst of 10, then a refusal.
    for _ in 0..10 {
        assert_eq!(counted(limiter.check(tenant, None, &limits).await), Some(Counted::Shared));
    }
    let refusal = limiter.check(tenant, None, &limits).await.expect_err("past the shared burst");
    assert_eq!(refusal.limited_by, LimitedBy::Tenant);
    // Within the delay the refusal is remembered (no Redis call); wait it out.
    let again = limiter.check(tenant, None, &limits).await.expect_err("still refused");
    assert!(again.retry_after <= refusal.retry_after);
    tokio::time::sleep(refusal.retry_after).await;

    // Redis down: this replica's share (one of two), a burst of 5, neither unlimited nor nothing.
    redis.kill();
    let outcomes: Vec<_> = futures_util::future::join_all((0..8).map(|_| limiter.check(tenant, None, &limits))).await;
    let local = outcomes.iter().filter(|outcome| **outcome == Ok(Counted::Locally)).count();
    // The first calls wait for the refused connection; one more may have accrued (at 5/s).
    assert!((5..=6).contains(&local), "{outcomes:?}");
    assert!(outcomes.iter().all(|outcome| outcome.is_err() || *outcome == Ok(Counted::Locally)), "{outcomes:?}");
    assert!(!cache.is_available());

    // Redis back: once a probe succeeds, requests are counted in Redis again (its keys
    // died with it, so the tenant starts with a full shared burst).
    redis.resume();
    let started = Instant::now();
    while !cache.probe().await {
        assert!(started.elapsed() < Duration::from_secs(10), "Redis never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counted(limiter.check(tenant, None, &limits).await), Some(Counted::Shared));
}

#[tokio::test]
async fn a_plans_rate_is_enforced_through_redis_then_locally_while_redis_is_down_then_through_redis_again() {
    let mut redis = ThrowawayRedis::start();
    let app = server_on(&redis, None, 1).await;
    let name = unique_slug("rated");
    let rate = tenantd::proto::RequestRate { per_second: 1, burst: 3 };
    let limits = tenantd::proto::PlanLimits { tenant_rate: Some(rate), ..Default::default() };
    let plan = tenantd::proto::Plan {
        name: name.clone(),
        display_name: name.clone(),
        limits: Some(limits),
        ..Default::default()
    };
    crate::plans::create_plan(&app, plan).await;
    let tenant = crate::plans::create_tenant_on(&app, &name, None).await.id;
    let free = app.create_tenant(&unique_slug("unplanned")).await.id;
    let mut users = app.users(&tenant);
    let burst_then_refusal = async |users: &mut UsersClient| {
        for attempt in 0..3 {
            users.list_users(ListUsersRequest::default()).await.unwrap_or_else(|s| panic!("burst {attempt}: {s:?}"));
        }
        let status = users.list_users(ListUsersRequest::default()).await.expect_err("past the plan's burst");
        refusal(&status)
    };

    // Redis up: the plan's limit, counted in Redis, refused before PostgreSQL.
    let (subject, _) = burst_then_refusal(&mut users).await;
    assert_eq!(subject, format!("tenant:{tenant}"));
    let checkouts = app.pool_checkouts();
    users.list_users(ListUsersRequest::default()).await.expect_err("still refused");
    assert_eq!(app.pool_checkouts(), checkouts, "a refused request checked out no connection");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let rate_key = format!("t:{{{tenant}}}:rate:tenant");
    let exists: i64 = redis::cmd("EXISTS").arg(&rate_key).query_async(&mut connection).await.expect("exists");
    assert_eq!(exists, 1, "counted in Redis");

    // Redis down: the record now comes from PostgreSQL, with the plan's limits, and the local
    // fallback (one replica: the whole limit) enforces them: neither unlimited nor refusing all.
    redis.kill();
    app.wait_for_status("redis", ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_millis(3100)).await; // the burst refills at 1/s
    burst_then_refusal(&mut users).await;
    app.users(&free).list_users(ListUsersRequest::default()).await.expect("control: a tenant without a plan");

    // Redis back: counted there again (its keys died with it: a fresh burst).
    redis.resume();
    app.wait_for_status("redis", ServingStatus::Serving).await;
    redis.wait_for_subscribers(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    burst_then_refusal(&mut users).await;
    let mut connection = client.get_multiplexed_async_connection().await.expect("reconnect");
    let exists: i64 = redis::cmd("EXISTS").arg(&rate_key).query_async(&mut connection).await.expect("exists");
    assert_eq!(exists, 1, "counted in Redis again");
    app.stop().await;
}

/// A replica's connection to `redis`.
fn redis_cache(redis: &ThrowawayRedis) -> RedisCache {
    RedisCache::new(&redis.url(), None, 2, Duration::from_millis(500)).expect("url")
}

/// The script calls (EVALSHA and EVAL) `redis` has answered so far.
async fn script_calls(redis: &ThrowawayRedis) -> u64 {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.expect("info");
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// A limiter with its own connection to `redis`, once Redis answers it.
async fn limiter_on(redis: &ThrowawayRedis) -> RateLimiter {
    let cache = redis_cache(redis);
    assert!(cache.probe().await, "Redis answers");
    RateLimiter::new(cache, 2)
}

#[tokio::test]
async fn a_high_limit_leases_tokens_so_most_requests_need_no_redis_call_and_two_replicas_never_overshoot() {
    let redis = ThrowawayRedis::start();
    // Demand is measured over half a lease's lifetime: a long one, so a slow debug run's
    // requests still count as one burst of demand.
    let first = Arc::new(limiter_on(&redis).await.with_lease_lifetime(Duration::from_secs(1)));
    let second = Arc::new(limiter_on(&redis).await);
    const REQUESTS: u64 = 200;
    // Script calls for 200 requests in a row, all admitted (and the refills they started).
    let calls_for_requests = async |tenant: Uuid, limits: &RateLimits| {
        let before = script_calls(&redis).await;
        for _ in 0..REQUESTS {
            assert_eq!(first.check(tenant, None, limits).await, Ok(Counted::Shared));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        script_calls(&redis).await - before
    };
    // 1,000/s leases up to min(1,000 / 100, burst) = 10 tokens, refilled from 5 to 10.
    let leased = RateLimits { tenant: Some(RateLimit { per_second: 1000, burst: 1000 }), api_key: None };
    let calls = calls_for_requests(Uuid::now_v7(), &leased).await;
    println!("{REQUESTS} requests at 1,000/s: {calls} script calls");
    assert!(calls * 4 <= REQUESTS, "{calls} script calls for {REQUESTS} requests");
    // Control: below 100/s no lease, one call per request.
    let unleased = RateLimits { tenant: Some(RateLimit { per_second: 99, burst: 500 }), api_key: None };
    assert_eq!(calls_for_requests(Uuid::now_v7(), &unleased).await, REQUESTS, "no lease below 100/s");

    // Overshoot: two replicas, 400 concurrent requests against a burst of 20 at 1,000/s (leases
    // of up to 10): leased tokens are counted in Redis first, so no more than the burst plus
    // what accrued is admitted.
    let hammered = Uuid::now_v7();
    let limits = RateLimits { tenant: Some(RateLimit { per_second: 1000, burst: 20 }), api_key: None };
    let started = Instant::now();
    let calls = (0..400).map(|index| if index % 2 == 0 { &first } else { &second });
    let outcomes = futures_util::future::join_all(calls.map(|limiter| limiter.check(hammered, None, &limits))).await;
    let elapsed = started.elapsed();
    let admitted = outcomes.iter().filter(|outcome| outcome.is_ok()).count() as u64;
    let allowed = 20 + (elapsed.as_secs_f64() * 1000.0).ceil() as u64;
    println!("admitted {admitted} of 400 in {elapsed:?} (allowed {allowed})");
    assert!(admitted >= 10, "the burst admits: {admitted}");
    assert!(admitted <= allowed, "admitted {admitted}, allowed {allowed}");
    assert!(outcomes.iter().all(|outcome| *outcome == Ok(Counted::Shared) || outcome.is_err()), "{outcomes:?}");
    let refusal = outcomes.iter().find_map(|outcome| outcome.err()).expect("some refused");
    assert!(refusal.retry_after > Duration::ZERO && refusal.retry_after <= Duration::from_millis(1));
}

/// Sends `command` (a CLIENT PAUSE or UNPAUSE) to `redis`.
async fn client_command(redis: &ThrowawayRedis, arguments: &[&str]) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let () = redis::cmd("CLIENT").arg(arguments).query_async(&mut connection).await.expect("client command");
}

#[tokio::test]
async fn a_lease_running_low_is_refilled_in_the_background_while_its_last_tokens_are_spent() {
    let redis = ThrowawayRedis::start();
    // A long lifetime, so the lease outlives the steps below, and a long timeout, so the paused
    // refill is still waited for when Redis resumes; 10,000/s leases up to 100.
    let cache = RedisCache::new(&redis.url(), None, 2, Duration::from_secs(20)).expect("url");
    assert!(cache.probe().await, "Redis answers");
    let limiter = Arc::new(RateLimiter::new(cache, 2).with_lease_lifetime(Duration::from_secs(10)));
    let limits = RateLimits { tenant: Some(RateLimit { per_second: 10_000, burst: 10_000 }), api_key: None };
    let tenant = Uuid::now_v7();
    let check = async || {
        let checked = tokio::time::timeout(Duration::from_secs(2), limiter.check(tenant, None, &limits)).await;
        checked.expect("answered without waiting for Redis")
    };
    for _ in 0..1000 {
        assert_eq!(check().await, Ok(Counted::Shared));
        if limiter.leased_tokens(tenant, None, &limits) >= 60 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // any refill in flight lands
    let held = limiter.leased_tokens(tenant, None, &limits);
    assert!(held >= 60, "a lease of {held} tokens");
    let calls = script_calls(&redis).await;

    // Scripts wait while Redis is paused for writes (INFO does not): the refill that spending
    // starts cannot land, and every token but the last is still spent.
    client_command(&redis, &["PAUSE", "10000", "WRITE"]).await;
    for _ in 1..held {
        assert_eq!(check().await, Ok(Counted::Shared));
    }
    assert_eq!(limiter.leased_tokens(tenant, None, &limits), 1, "nothing was added while Redis was paused");
    assert_eq!(script_calls(&redis).await, calls, "no script ran while Redis was paused");

    // Control: the refill was in flight, and lands once Redis runs scripts again.
    client_command(&redis, &["UNPAUSE"]).await;
    let started = Instant::now();
    while limiter.leased_tokens(tenant, None, &limits) <= 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "the refill never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(script_calls(&redis).await, calls + 1, "one refill, started ahead of running out");
}

#[tokio::test]
async fn replicas_with_sparse_requests_take_no_lease_so_they_are_admitted_up_to_the_shared_limit() {
    // Eight replicas, each asking once per 12 ms (about 83/s, 667/s in all), under a limit of
    // 1,000/s that leases up to 10 tokens: a lease per request would take 11 tokens for each,
    // far past the limit, and refuse most of them. Sized by demand, no lease is taken.
    let redis = ThrowawayRedis::start();
    let sparse_requests = async |limit: RateLimit| {
        let limits = RateLimits { tenant: Some(limit), api_key: None };
        let tenant = Uuid::now_v7();
        let mut replicas = Vec::new();
        for _ in 0..8 {
            let limiter = Arc::new(limiter_on(&redis).await);
            replicas.push(tokio::spawn(async move {
                let (mut admitted, mut refused) = (0_u64, 0_u64);
                for _ in 0..100 {
                    match limiter.check(tenant, None, &limits).await {
                        Ok(_) => admitted += 1,
                        Err(_) => refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(12)).await;
                }
                (admitted, refused)
            }));
        }
        let mut totals = (0, 0);
        for replica in replicas {
            let (admitted, refused) = replica.await.expect("replica");
            totals = (totals.0 + admitted, totals.1 + refused);
        }
        totals
    };
    let (admitted, refused) = sparse_requests(RateLimit { per_second: 1000, burst: 20 }).await;
    println!("under 1,000/s: admitted {admitted}, refused {refused}");
    assert_eq!((admitted, refused), (800, 0), "a demand of two thirds of the limit is admitted whole");
    // Control: the same demand against 400/s is limited.
    let (admitted, refused) = sparse_requests(RateLimit { per_second: 400, burst: 20 }).await;
    println!("under 400/s: admitted {admitted}, refused {refused}");
    assert!(refused > 0 && admitted > 0, "admitted {admitted}, refused {refused}");
}

/// The threshold of each `rate_limit.warning` event in `tenant`'s audit trail, in percent.
async fn rate_warnings(app: &TestApp, tenant: &str) -> Vec<f64> {
    let request = ListTenantAuditEventsRequest { tenant_id: tenant.to_owned(), ..Default::default() };
    let events = app.tenants.clone().list_tenant_audit_events(request).await.expect("audit").into_inner();
    let threshold = |details: prost_types::Struct| match details.fields.get("threshold_percent")?.kind.clone()? {
        Kind::NumberValue(percent) => Some(percent),
        _ => None,
    };
    let warnings = events.audit_events.into_iter().filter(|event| event.action == "rate_limit.warning");
    let mut thresholds: Vec<f64> =
        warnings.map(|event| event.details.and_then(threshold).expect("a threshold")).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds
}

#[tokio::test]
async fn a_tenant_sustaining_its_rate_records_one_80_and_one_100_percent_warning_across_two_replicas_a_quiet_one_none()
{
    // 20/s over windows of 1 s: 80% is 16 tokens in a window, 100% is 20.
    const WINDOW: Duration = Duration::from_millis(1000);
    const DRIVEN: Duration = Duration::from_secs(4);
    let redis = ThrowawayRedis::start();
    let configure = |config: &mut Config| {
        config.rate_warning_window = WINDOW;
        config.metrics_addr = Some("127.0.0.1:0".parse().expect("address"));
    };
    let first = server_with(&redis, None, 1, configure).await;
    let second = server_with(&redis, Some(&first.database), 2, configure).await;
    let plan = unique_slug("warned");
    let limits = PlanLimits { tenant_rate: Some(RequestRate { per_second: 20, burst: 5 }), ..Default::default() };
    let new_plan = Plan { name: plan.clone(), display_name: plan.clone(), limits: Some(limits), ..Default::default() };
    crate::plans::create_plan(&first, new_plan).await;
    let busy = crate::plans::create_tenant_on(&first, &plan, None).await.id;
    let quiet = crate::plans::create_tenant_on(&first, &plan, None).await.id;

    // The busy tenant: three callers per replica, far above its rate, for four windows.
    let started = Instant::now();
    let replicas = [&first, &second];
    let busy_callers = drive(&replicas, &busy, 3, DRIVEN);
    // The quiet tenant beside it: 5 requests a second, a quarter of its rate, on both replicas.
    let quiet_caller = async {
        let mut pings = [&first, &second].map(|app| ping_client(app, Metadata::platform().tenant_id(&quiet)));
        let mut sent = 0_usize;
        while started.elapsed() < DRIVEN {
            pings[sent % 2].ping(PingRequest {}).await.expect("the quiet tenant is within its rate");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent
    };
    let ((admitted, refused), sent) = tokio::join!(busy_callers, quiet_caller);
    println!("busy: admitted {admitted}, refused {refused}; quiet: {sent} sent");
    assert!(refused > admitted, "the busy tenant was driven over its limit");

    // The events are written off the request path: wait for the busy tenant's two, then a
    // little longer, so that a late duplicate would show.
    let waited = Instant::now();
    while rate_warnings(&first, &busy).await.len() < 2 && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rate_warnings(&first, &busy).await, [80.0, 100.0], "one warning per threshold across two replicas");
    assert_eq!(rate_warnings(&first, &quiet).await, [0.0; 0], "a tenant at a quarter of its rate is not warned");

    // The metric, by plan and threshold and never by tenant (the two servers share a process,
    // so both expose the same counts).
    for app in [&first, &second] {
        let text = crate::metrics::scrape(app.metrics_port.expect("metrics")).await;
        for threshold in ["80", "100"] {
            let line =
                format!("tenantd_rate_limit_warnings_total{{plan=\"{plan}\",threshold_percent=\"{threshold}\"}} 1");
            assert!(text.contains(&line), "missing {line}");
        }
        let tenant_labelled = text.lines().any(|line| line.contains(&busy) || line.contains(&quiet));
        assert!(!tenant_labelled, "no metric names a tenant");
    }
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}

/// Whether `app` refuses one of two pings for `tenant` in a row (a rate of 1 with a burst of 1
/// refuses the second; the plan's earlier 1,000 refuses neither).
async fn refuses_a_second_ping(app: &TestApp, tenant: &str) -> bool {
    let mut ping = ping_client(app, Metadata::platform().tenant_id(tenant));
    for _ in 0..2 {
        match ping.ping(PingRequest {}).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => return true,
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    false
}

#[tokio::test]
async fn a_plan_change_reaches_every_one_of_its_2000_tenants_on_two_replicas_within_a_second() {
    use futures_util::StreamExt;
    const TENANTS: usize = 2000;
    let redis = ThrowawayRedis::start();
    let first = server_on(&redis, None, 1).await;
    let second = server_on(&redis, Some(&first.database), 2).await;
    let name = unique_slug("scale");
    let rate = |per_second| PlanLimits {
        tenant_rate: Some(RequestRate { per_second, burst: per_second }),
        ..Default::default()
    };
    let plan = Plan { name: name.clone(), display_name: name.clone(), limits: Some(rate(1000)), ..Default::default() };
    let plan = crate::plans::create_plan(&first, plan).await;
    // One tenant through the API, the others seeded in one statement (as CreateTenant would
    // leave them: active, pooled, on the plan).
    let mut tenants = vec![crate::plans::create_tenant_on(&first, &name, None).await.id];
    let admin = crate::helpers::connect(&crate::helpers::pg_admin(), &first.database).await;
    let seeded = admin
        .query(
            "INSERT INTO tenants (id, slug, display_name, state, plan) \
             SELECT gen_random_uuid(), $1 || '-' || n, 'Seeded ' || n, 'active', $1 \
             FROM generate_series(1, $2::int) AS n RETURNING id::text",
            &[&name, &i32::try_from(TENANTS - 1).expect("small")],
        )
        .await
        .expect("seed tenants");
    tenants.extend(seeded.iter().map(|row| row.get::<_, String>(0)));
    assert_eq!(tenants.len(), TENANTS);

    // Every tenant's record is cached on both replicas and in Redis before the change.
    let started = Instant::now();
    let pairs = tenants.iter().flat_map(|tenant| [(&first, tenant), (&second, tenant)]);
    futures_util::stream::iter(pairs)
        .for_each_concurrent(16, async |(app, tenant)| {
            ping_client(app, Metadata::platform().tenant_id(tenant)).ping(PingRequest {}).await.expect("warm");
        })
        .await;
    println!("{TENANTS} tenants cached on two replicas in {:?}", started.elapsed());
    // Checked on a sample spread over the plan's tenants (the API's first, seeded ones after).
    let sample: Vec<&String> = tenants.iter().step_by(TENANTS / 20).collect();
    let checks = || sample.iter().flat_map(|tenant| [(&first, *tenant), (&second, *tenant)]);
    for (app, tenant) in checks() {
        assert!(!refuses_a_second_ping(app, tenant).await, "control: the plan's 1,000/s admits two pings");
    }

    let mut lowered = Plan { name: name.clone(), limits: Some(rate(1)), ..Default::default() };
    lowered.etag = plan.etag;
    let mut client = crate::plans::plans(&first, crate::helpers::PLATFORM_TOKEN);
    let changed_at = Instant::now();
    let update = tokio::spawn(async move {
        let mask = prost_types::FieldMask { paths: vec!["limits".into()] };
        client.update_plan(tenantd::proto::UpdatePlanRequest { plan: Some(lowered), update_mask: Some(mask) }).await
    });
    let mut pending: Vec<_> = checks().collect();
    while !pending.is_empty() {
        let outcomes = futures_util::future::join_all(
            pending.iter().map(|(app, tenant)| async move { refuses_a_second_ping(app, tenant).await }),
        )
        .await;
        let mut outcome = outcomes.into_iter();
        pending.retain(|_| !outcome.next().unwrap_or(false));
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "{} of {} sampled tenant-replica pairs still on the old limit after 1 s (UpdatePlan answered: {})",
            pending.len(),
            sample.len() * 2,
            update.is_finished()
        );
    }
    let propagation = changed_at.elapsed();
    update.await.expect("task").expect("lower the plan's rate");
    println!("a plan of {TENANTS} tenants changed on both replicas in {propagation:?} (from the UpdatePlan call)");
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}
