//! Faults: PostgreSQL and Redis disappear under load and come back. Each test runs its
//! own throwaway servers (see `throwaway.rs`); the shared ones are never stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenantd::config::SecretString;
use tenantd::proto::{CreateUserRequest, GetUserRequest, User};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{TestApp, create_database, migrate, start, test_config, unique_slug};
use crate::throwaway::{ThrowawayPostgres, ThrowawayRedis};

/// What the load saw.
#[derive(Default)]
struct Observed {
    /// Emails whose CreateUser was acknowledged.
    acknowledged: Vec<String>,
    /// Calls that took longer than their deadline allows.
    hung: usize,
    /// Failed calls: (when they started, code, reason).
    failures: Vec<(Instant, Code, String)>,
    /// Successful calls: when they started.
    successes: Vec<Instant>,
}

const DEADLINE: Duration = Duration::from_secs(3);

/// Runs creates and reads against `tenant` from `workers` tasks until `stop`.
fn run_load(
    app: &TestApp,
    tenant: &str,
    seed_user: &str,
    workers: usize,
    stop: CancellationToken,
) -> Arc<Mutex<Observed>> {
    let observed = Arc::new(Mutex::new(Observed::default()));
    for worker in 0..workers {
        let mut client = app.users(tenant);
        let seed_user = seed_user.to_owned();
        let observed = observed.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sequence = 0;
            while !stop.is_cancelled() {
                sequence += 1;
                let started = Instant::now();
                let email = format!("load-{worker}-{sequence}@faults.example");
                let outcome = if sequence % 2 == 0 {
                    let mut request = tonic::Request::new(CreateUserRequest {
                        user: Some(User { email: email.clone(), ..Default::default() }),
                        ..Default::default()
                    });
                    request.set_timeout(DEADLINE);
                    client.create_user(request).await.map(|_| Some(email))
                } else {
                    let mut request = tonic::Request::new(GetUserRequest { id: seed_user.clone() });
                    request.set_timeout(DEADLINE);
                    client.get_user(request).await.map(|_| None)
                };
                let elapsed = started.elapsed();
                {
                    let mut observed = observed.lock().expect("lock");
                    if elapsed > DEADLINE + Duration::from_millis(500) {
                        observed.hung += 1;
                    }
                    match outcome {
                        Ok(Some(email)) => {
                            observed.acknowledged.push(email);
                            observed.successes.push(started);
                        }
                        Ok(None) => observed.successes.push(started),
                        Err(status) => {
                            observed.failures.push((started, status.code(), crate::helpers::reason(&status)))
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    observed
}

/// A ready tenantd on `postgres`, a throwaway server, in a database `tenantd` created and
/// migrated there. A pooled connection is waited for 500 ms at most.
async fn start_on(postgres: &ThrowawayPostgres) -> TestApp {
    start_on_with(postgres, Duration::from_millis(500)).await
}

/// [`start_on`], waiting at most `acquire_timeout` for a pooled connection.
async fn start_on_with(postgres: &ThrowawayPostgres, acquire_timeout: Duration) -> TestApp {
    let admin = postgres.connect("postgres", "postgres").await;
    admin.batch_execute("CREATE DATABASE tenantd").await.expect("create database");
    tenantd::db::migrations::run_pending(&postgres.url("postgres", "tenantd")).await.expect("migrate");
    let mut config = test_config("unused");
    config.database.url = SecretString::from(postgres.url("tenantd_app", "tenantd"));
    config.database.acquire_timeout = acquire_timeout;
    let app = start("unused".into(), config).await;
    app.wait_for_status("", ServingStatus::Serving).await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_postgres_stops_under_load_tenantd_fails_fast_and_recovers_by_itself_with_no_acknowledged_write_lost() {
    let postgres = ThrowawayPostgres::start();
    let app = start_on(&postgres).await;
    let tenant = app.create_tenant(&unique_slug("pg")).await.id;
    let seed = app.create_user(&tenant, "seed@faults.example").await.id;

    let stop_load = CancellationToken::new();
    let observed = run_load(&app, &tenant, &seed, 8, stop_load.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    postgres.kill();
    let killed_at = Instant::now();
    let flip = app.wait_for_status("", ServingStatus::NotServing).await;
    assert!(flip < Duration::from_secs(2), "readiness took {flip:?} to go NOT_SERVING");
    assert_eq!(app.status("postgres").await, ServingStatus::NotServing);
    assert_eq!(app.status("liveness").await, ServingStatus::Serving, "liveness never follows a dependency");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    postgres.resume();
    let resumed_at = Instant::now();
    let recovered = loop {
        let mut request = tonic::Request::new(GetUserRequest { id: seed.clone() });
        request.set_timeout(Duration::from_secs(1));
        if app.users(&tenant).get_user(request).await.is_ok() {
            break resumed_at.elapsed();
        }
        assert!(resumed_at.elapsed() < Duration::from_secs(5), "no recovery within 5 s of PostgreSQL's return");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ready = app.wait_for_status("", ServingStatus::Serving).await + recovered;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_load.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let observed = std::mem::take(&mut *observed.lock().expect("lock"));
    let during_outage: Vec<_> = observed
        .failures
        .iter()
        .filter(|(started, _, _)| *started >= killed_at + Duration::from_millis(100) && *started < resumed_at)
        .collect();
    assert!(!during_outage.is_empty(), "the load saw the outage");
    for (_, code, reason) in &during_outage {
        assert_eq!(*code, Code::Unavailable, "outage failures are UNAVAILABLE, got {code:?} ({reason})");
    }
    assert_eq!(observed.hung, 0, "{} calls outlived their deadline", observed.hung);
    assert!(observed.successes.iter().any(|started| *started > resumed_at), "the load succeeds again");

    let client = postgres.connect("postgres", "tenantd").await;
    let stored: Vec<String> =
        client.query("SELECT email FROM users", &[]).await.expect("read back").iter().map(|row| row.get(0)).collect();
    let missing: Vec<_> = observed.acknowledged.iter().filter(|email| !stored.contains(email)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    println!(
        "postgres outage: readiness NOT_SERVING after {flip:?}; {} calls failed UNAVAILABLE during the outage, none hung; \
         first successful read {recovered:?} and readiness SERVING {ready:?} after PostgreSQL returned; \
         {} acknowledged writes, all present",
        during_outage.len(),
        observed.acknowledged.len()
    );
    app.shutdown.cancel();
    app.server.await.expect("task").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_under_load_the_data_plane_keeps_answering_and_caching_and_invalidation_return_with_it() {
    let mut redis = ThrowawayRedis::start();
    let database = create_database().await;
    migrate(&database).await;
    let configure = || {
        let mut config = test_config(&database);
        config.redis.url = SecretString::from(redis.url());
        config
    };
    let first = start(database.clone(), configure()).await;
    let second = start(database.clone(), configure()).await;
    for app in [&first, &second] {
        app.wait_for_status("", ServingStatus::Serving).await;
        app.wait_for_status("redis", ServingStatus::Serving).await;
    }
    let tenant = first.create_tenant(&unique_slug("rd")).await.id;
    let seed = first.create_user(&tenant, "seed@faults.example").await.id;

    let stop_load = CancellationToken::new();
    let observed = run_load(&second, &tenant, &seed, 4, stop_load.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.kill();
    let killed_at = Instant::now();
    let flip = second.wait_for_status("redis", ServingStatus::NotServing).await;
    assert_eq!(second.status("").await, ServingStatus::Serving, "Redis is not needed to be ready");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let failures_while_down =
        observed.lock().expect("lock").failures.iter().filter(|(started, _, _)| *started >= killed_at).count();
    assert_eq!(failures_while_down, 0, "the data plane kept answering without Redis");

    redis.resume();
    let resumed_at = Instant::now();
    let recovered = second.wait_for_status("redis", ServingStatus::Serving).await;
    first.wait_for_status("redis", ServingStatus::Serving).await;
    // Both replicas subscribe to invalidations again.
    redis.wait_for_subscribers(2, Duration::from_secs(5)).await;
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let resubscribed = resumed_at.elapsed();

    // Caching works again: a resolution fills the shared cache. The entry the replica
    // resolved while Redis was down, or just after it returned on a pooled connection that
    // had lost its socket (the write to Redis then fails), lives in its own cache for at
    // most 1 s (the TTL of an entry Redis did not take), so within that bound a read fills
    // Redis again.
    let record_key = tenantd::cache::RedisKey::for_tenant(tenant.parse().expect("uuid"), &["record"]);
    let refill_started = Instant::now();
    loop {
        second.users(&tenant).get_user(GetUserRequest { id: seed.clone() }).await.expect("read");
        let cached: bool =
            redis::cmd("EXISTS").arg(record_key.as_str()).query_async(&mut connection).await.expect("exists");
        if cached {
            break;
        }
        assert!(refill_started.elapsed() < Duration::from_secs(2), "the tenant record is cached in Redis again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Invalidation works again: a suspension through the first replica reaches the second.
    first
        .tenants
        .clone()
        .suspend_tenant(tenantd::proto::SuspendTenantRequest { id: tenant.clone(), etag: String::new() })
        .await
        .expect("suspend");
    let suspended_at = Instant::now();
    stop_load.cancel();
    let propagation = loop {
        match second.users(&tenant).get_user(GetUserRequest { id: seed.clone() }).await {
            Err(status) if status.code() == Code::FailedPrecondition => break suspended_at.elapsed(),
            _ => assert!(
                suspended_at.elapsed() < Duration::from_secs(1),
                "the suspension did not reach the second replica"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "redis outage: `redis` NOT_SERVING after {flip:?}, no data-plane failure while down; SERVING {recovered:?} \
         and both replicas resubscribed {resubscribed:?} after Redis returned; a suspension then reached the other \
         replica in {propagation:?}"
    );
    for app in [first, second] {
        app.shutdown.cancel();
        app.server.await.expect("task").expect("clean stop");
    }
    crate::helpers::drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_rpcs_fail_at_once_with_database_unavailable_not_after_the_acquire_timeout() {
    // Long, so that a call that waited for the pool cannot pass for one that failed fast.
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    let postgres = ThrowawayPostgres::start();
    let app = start_on_with(&postgres, ACQUIRE_TIMEOUT).await;
    let tenant = app.create_tenant(&unique_slug("pg")).await.id;
    let seed = app.create_user(&tenant, "seed@faults.example").await.id;
    let get_user = || {
        let mut users = app.users(&tenant);
        let mut request = tonic::Request::new(GetUserRequest { id: seed.clone() });
        request.set_timeout(2 * ACQUIRE_TIMEOUT);
        async move { users.get_user(request).await }
    };
    get_user().await.expect("control: a read succeeds while PostgreSQL is up");

    postgres.kill();
    // Right away (the pool still holds a connection to the dead server, and the probe has
    // not looked yet), then once readiness has seen the outage: both fail fast.
    let mut slowest = Duration::ZERO;
    for moment in ["right after the stop", "once readiness is NOT_SERVING"] {
        if moment.starts_with("once") {
            app.wait_for_status("", ServingStatus::NotServing).await;
        }
        let started = Instant::now();
        let failed = get_user().await.expect_err("no read while PostgreSQL is down");
        let elapsed = started.elapsed();
        assert_eq!(
            (failed.code(), crate::helpers::reason(&failed).as_str()),
            (Code::Unavailable, "DATABASE_UNAVAILABLE"),
            "{moment}: {failed:?}"
        );
        assert!(elapsed < ACQUIRE_TIMEOUT / 10, "{moment}: answered after {elapsed:?}, not at once");
        slowest = slowest.max(elapsed);
        let mut tenants = app.tenants.clone();
        let started = Instant::now();
        let control_plane = tenants
            .get_tenant(tenantd::proto::GetTenantRequest {
                selector: Some(tenantd::proto::get_tenant_request::Selector::Id(tenant.clone())),
            })
            .await
            .expect_err("no control-plane read while PostgreSQL is down");
        assert_eq!(crate::helpers::reason(&control_plane), "DATABASE_UNAVAILABLE", "{moment}: {control_plane:?}");
        assert!(started.elapsed() < ACQUIRE_TIMEOUT / 10, "{moment}: GetTenant answered after {:?}", started.elapsed());
    }

    postgres.resume();
    let resumed_at = Instant::now();
    while get_user().await.is_err() {
        assert!(resumed_at.elapsed() < Duration::from_secs(10), "reads succeed again once PostgreSQL is back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.create_user(&tenant, "after@faults.example").await;
    println!(
        "postgres down: calls failed DATABASE_UNAVAILABLE within {slowest:?} (acquire timeout {ACQUIRE_TIMEOUT:?}); \
         served again {:?} after the restart",
        resumed_at.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn resolving_an_api_key_while_postgres_is_down_is_unavailable_not_not_found() {
    use crate::helpers::ApiKeyScope;
    use tenantd::proto::ResolveTenantRequest;
    use tenantd::proto::resolve_tenant_request::Identifier;

    let postgres = ThrowawayPostgres::start();
    let app = start_on(&postgres).await;
    let tenant = app.create_tenant(&unique_slug("pg")).await.id;
    let (_, used) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let (_, unseen) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let resolve = |key: &str| {
        let mut tenants = app.tenants.clone();
        let request = ResolveTenantRequest { identifier: Some(Identifier::ApiKey(key.to_owned())) };
        async move { tenants.resolve_tenant(request).await }
    };
    let resolved = resolve(&used).await.expect("control: a valid key resolves").into_inner();
    assert_eq!(resolved.id, tenant);

    postgres.kill();
    app.wait_for_status("", ServingStatus::NotServing).await;
    let outage = resolve(&unseen).await.expect_err("the key cannot be checked while PostgreSQL is down");
    assert_eq!(outage.code(), Code::Unavailable, "an outage is not an unknown tenant: {outage:?}");
    postgres.resume();
    app.wait_for_status("", ServingStatus::Serving).await;
    let resolved = resolve(&unseen).await.expect("the same key resolves once PostgreSQL is back").into_inner();
    assert_eq!(resolved.id, tenant);
    app.stop().await;
}
