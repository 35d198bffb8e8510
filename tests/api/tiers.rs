//! Isolation tiers (decision 0018): schema tenants provisioned into a schema of their own,
//! routed there by the tenant transaction, isolated at the SQL level as the app role, and
//! not served while their schema is unfinished or behind its migrations.

use std::time::Duration;

use tenantd::db::tenant_schema::{latest_schema_version, quote_identifier, schema_name};
use tenantd::proto::{CreateTenantRequest, GetTenantRequest, GetUserRequest, ListUsersRequest, Tenant};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

use crate::helpers::{
    IsolationTier, State, TestApp, assert_error, connect, pg_admin, set_tenant, spawn_app, spawn_app_in, start,
    test_config, unique_slug,
};

fn schema_of(tenant_id: &str) -> String {
    schema_name(Uuid::parse_str(tenant_id).expect("a tenant id"))
}

#[tokio::test]
async fn a_schema_tenant_gets_a_schema_of_its_own_and_its_rows_live_there() {
    let app = spawn_app().await;
    let schema_tenant = app.create_tenant_in(&unique_slug("sch"), IsolationTier::Schema).await;
    let pooled_tenant = app.create_tenant_in(&unique_slug("poo"), IsolationTier::Pooled).await;
    assert_eq!(schema_tenant.isolation_tier(), IsolationTier::Schema);
    assert_eq!(schema_tenant.state(), State::Active, "active once its schema is complete");
    assert_eq!(pooled_tenant.isolation_tier(), IsolationTier::Pooled, "control: the default tier");
    let selector = Some(tenantd::proto::get_tenant_request::Selector::Id(schema_tenant.id.clone()));
    let fetched = app.tenants.clone().get_tenant(GetTenantRequest { selector }).await.expect("get").into_inner();
    assert_eq!(fetched.isolation_tier(), IsolationTier::Schema);

    app.create_user(&schema_tenant.id, "s@s.example").await;
    app.create_user(&pooled_tenant.id, "p@p.example").await;
    let admin = connect(&pg_admin(), &app.database).await;
    let schema = schema_of(&schema_tenant.id);
    let owner: String = admin
        .query_one("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .expect("the schema exists")
        .get(0);
    assert_eq!(owner, "tenantd_owner");
    let in_schema: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {}.users", quote_identifier(&schema)), &[])
        .await
        .expect("count")
        .get(0);
    let in_shared: i64 = admin
        .query_one("SELECT count(*) FROM public.users WHERE tenant_id = $1::text::uuid", &[&schema_tenant.id])
        .await
        .expect("count")
        .get(0);
    let pooled_in_shared: i64 = admin
        .query_one("SELECT count(*) FROM public.users WHERE tenant_id = $1::text::uuid", &[&pooled_tenant.id])
        .await
        .expect("count")
        .get(0);
    assert_eq!((in_schema, in_shared), (1, 0), "the schema tenant's user is in its schema only");
    assert_eq!(pooled_in_shared, 1, "control: the pooled tenant's user is in the shared table");
    let version: Option<String> = admin
        .query_one("SELECT schema_version FROM tenants WHERE id = $1::text::uuid", &[&schema_tenant.id])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version.as_deref(), Some(latest_schema_version()));
    app.stop().await;
}

/// Counts the users of `schema` that the app role sees with `tenant` set.
async fn visible_in(client: &tokio_postgres::Client, schema: &str, tenant: Option<&str>) -> i64 {
    client.batch_execute("BEGIN").await.expect("begin");
    if let Some(tenant) = tenant {
        set_tenant(client, tenant).await;
    }
    let count = client
        .query_one(&format!("SELECT count(*) FROM {}.users", quote_identifier(schema)), &[])
        .await
        .expect("select as the app role")
        .get(0);
    client.batch_execute("COMMIT").await.expect("commit");
    count
}

#[tokio::test]
async fn as_the_app_role_one_schema_tenant_sees_nothing_of_another_tenants_schema() {
    let app = spawn_app_in(IsolationTier::Schema, |_| {}).await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    app.create_user(&tenant_a, "a@a.example").await;
    app.create_user(&tenant_b, "b@b.example").await;
    let (schema_a, schema_b) = (schema_of(&tenant_a), schema_of(&tenant_b));
    let app_role = connect("tenantd_app", &app.database).await;

    assert_eq!(visible_in(&app_role, &schema_a, Some(&tenant_a)).await, 1, "control: A sees its own row");
    assert_eq!(visible_in(&app_role, &schema_b, Some(&tenant_b)).await, 1, "control: B sees its own row");
    assert_eq!(visible_in(&app_role, &schema_a, Some(&tenant_b)).await, 0, "schema A's tables with B set");
    assert_eq!(visible_in(&app_role, &schema_b, Some(&tenant_a)).await, 0, "schema B's tables with A set");
    assert_eq!(visible_in(&app_role, &schema_a, None).await, 0, "no tenant set: fail closed");

    // Writing another tenant's row into A's schema is refused, even with that tenant set.
    app_role.batch_execute("BEGIN").await.expect("begin");
    set_tenant(&app_role, &tenant_b).await;
    let insert = format!(
        "INSERT INTO {}.users (tenant_id, id, email, role) VALUES ($1::text::uuid, $2::text::uuid, 'x@x.example', 'member')",
        quote_identifier(&schema_a)
    );
    let refused = app_role.execute(&insert, &[&tenant_b, &Uuid::now_v7().to_string()]).await;
    assert!(refused.is_err(), "a row of B cannot enter A's schema");
    app_role.batch_execute("ROLLBACK").await.expect("rollback");

    // And the app role can create nothing in a tenant schema.
    let create = format!("CREATE TABLE {}.planted (id int)", quote_identifier(&schema_a));
    let denied = app_role.batch_execute(&create).await.expect_err("the app role cannot create in a tenant schema");
    assert_eq!(denied.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    app.stop().await;
}

#[tokio::test]
async fn a_schema_tenant_whose_provisioning_failed_is_not_served_and_a_retry_finishes_it() {
    let database = crate::helpers::create_database().await;
    crate::helpers::migrate(&database).await;
    let mut config = test_config(&database);
    // A role that does not exist: every provisioning attempt fails.
    config.database.provisioning_url = Some(crate::helpers::database_url("tenantd_no_such_role", &database).into());
    let broken = start(database.clone(), config).await;
    broken.wait_for_status("", ServingStatus::Serving).await;
    let slug = unique_slug("prov");
    let request_id = Uuid::now_v7().to_string();
    let request = || CreateTenantRequest {
        tenant: Some(Tenant {
            slug: slug.clone(),
            display_name: "Provisioned".to_owned(),
            isolation_tier: IsolationTier::Schema as i32,
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let failed = broken.tenants.clone().create_tenant(request()).await;
    assert_error(failed, Code::Unavailable, "TENANT_PROVISIONING");
    let stuck = broken
        .tenants
        .clone()
        .get_tenant(GetTenantRequest {
            selector: Some(tenantd::proto::get_tenant_request::Selector::Slug(slug.clone())),
        })
        .await
        .expect("the tenant exists")
        .into_inner();
    assert_eq!(stuck.state(), State::Provisioning);
    let served = broken.users(&stuck.id).list_users(ListUsersRequest::default()).await;
    assert_error(served, Code::Unavailable, "TENANT_PROVISIONING");
    broken.shutdown.cancel();
    let _ = broken.server.await;

    let fixed = start(database.clone(), test_config(&database)).await;
    fixed.wait_for_status("", ServingStatus::Serving).await;
    let finished = fixed.tenants.clone().create_tenant(request()).await.expect("the retry finishes").into_inner();
    assert_eq!((finished.id.clone(), finished.state()), (stuck.id.clone(), State::Active));
    fixed.users(&finished.id).list_users(ListUsersRequest::default()).await.expect("served once provisioned");
    let again = fixed.tenants.clone().create_tenant(request()).await.expect("a second retry").into_inner();
    assert_eq!((again.state(), again.id), (State::Active, finished.id), "a retry of a finished create changes nothing");
    fixed.stop().await;
}

#[tokio::test]
async fn a_schema_tenant_whose_schema_is_behind_is_unavailable_until_migrated() {
    let app: TestApp =
        spawn_app_in(IsolationTier::Schema, |config| config.tenant_cache_ttl = Duration::from_millis(100)).await;
    let behind = app.create_tenant(&unique_slug("behind")).await.id;
    let current = app.create_tenant(&unique_slug("current")).await.id;
    let user = app.create_user(&behind, "u@u.example").await;
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute("UPDATE tenants SET schema_version = '20261203000013' WHERE id = $1::text::uuid", &[&behind])
        .await
        .expect("mark the schema behind");
    app.wait_for_status("tenant_schemas", ServingStatus::NotServing).await;
    assert_eq!(app.status("").await, ServingStatus::Serving, "one tenant's schema does not take the replica out");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = app.users(&behind).get_user(GetUserRequest { id: user.id.clone() }).await;
    assert_error(refused, Code::Unavailable, "TENANT_SCHEMA_BEHIND");
    app.users(&current)
        .list_users(ListUsersRequest::default())
        .await
        .expect("control: another schema tenant is served");

    let report =
        tenantd::db::migrations::migrate_tenant_schemas(&crate::helpers::database_url(&pg_admin(), &app.database), 4)
            .await
            .expect("migrate the tenant schemas");
    assert_eq!((report.migrated, report.failed.len()), (1, 0), "{report:?}");
    app.wait_for_status("tenant_schemas", ServingStatus::Serving).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.users(&behind).get_user(GetUserRequest { id: user.id }).await.expect("served again once migrated");
    let rerun =
        tenantd::db::migrations::migrate_tenant_schemas(&crate::helpers::database_url(&pg_admin(), &app.database), 4)
            .await
            .expect("migrate again");
    assert_eq!((rerun.migrated, rerun.current), (0, 2), "idempotent: {rerun:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_schema_that_fails_to_migrate_is_reported_by_name_and_does_not_block_the_others() {
    let app = spawn_app_in(IsolationTier::Schema, |_| {}).await;
    let healthy = app.create_tenant(&unique_slug("ok")).await.id;
    let broken = app.create_tenant(&unique_slug("bad")).await.id;
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute(
            "UPDATE tenants SET schema_version = '20261203000013' WHERE id IN ($1::text::uuid, $2::text::uuid)",
            &[&healthy, &broken],
        )
        .await
        .expect("mark both behind");
    admin
        .batch_execute(&format!("DROP TABLE {}.tenant_settings", quote_identifier(&schema_of(&broken))))
        .await
        .expect("break one schema");
    let url = crate::helpers::database_url(&pg_admin(), &app.database);
    let report = tenantd::db::migrations::migrate_tenant_schemas(&url, 2).await.expect("the run completes");
    assert_eq!(report.migrated, 1, "the healthy schema was migrated: {report:?}");
    let failed: Vec<&str> = report.failed.iter().map(|(schema, _)| schema.as_str()).collect();
    assert_eq!(failed, [schema_of(&broken).as_str()], "the broken one is named");
    let versions = admin
        .query(
            "SELECT id::text, schema_version FROM tenants WHERE id IN ($1::text::uuid, $2::text::uuid)",
            &[&healthy, &broken],
        )
        .await
        .expect("versions");
    for row in versions {
        let (id, version): (String, Option<String>) = (row.get(0), row.get(1));
        let expected = if id == healthy { latest_schema_version() } else { "20261203000013" };
        assert_eq!(version.as_deref(), Some(expected), "{id}: the failed schema rolled back to where it was");
    }
    app.stop().await;
}

/// Marks a schema tenant's schema behind and makes every replica forget its cached record, then
/// waits until the tenant is refused for it.
async fn mark_behind(app: &TestApp, redis: &tenantd::cache::RedisCache, tenant_id: &str, user_id: &str) {
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute("UPDATE tenants SET schema_version = '20261203000013' WHERE id = $1::text::uuid", &[&tenant_id])
        .await
        .expect("mark the schema behind");
    tenantd::tenancy::resolver::announce_invalidation(redis, Uuid::parse_str(tenant_id).expect("uuid")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app.users(tenant_id).get_user(GetUserRequest { id: user_id.to_owned() }).await {
            Err(status) if crate::helpers::reason(&status) == "TENANT_SCHEMA_BEHIND" => return,
            other => assert!(tokio::time::Instant::now() < deadline, "never refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tenant_is_served_right_after_tenantd_migrate_without_waiting_for_the_cache_ttl() {
    // A TTL far longer than the test: only an invalidation can refresh a cached record.
    let app = spawn_app_in(IsolationTier::Schema, |config| config.tenant_cache_ttl = Duration::from_secs(300)).await;
    let redis_url = crate::helpers::redis_url();
    let cluster = std::env::var_os("TENANTD_TEST_REDIS_CLUSTER").is_some();
    let redis = if cluster {
        tenantd::cache::RedisCache::cluster(&redis_url, Duration::from_secs(1))
    } else {
        tenantd::cache::RedisCache::new(&redis_url, None, 1, Duration::from_secs(1))
    }
    .expect("redis");
    assert!(redis.probe().await, "redis is up");
    let database_url = crate::helpers::database_url(&pg_admin(), &app.database);

    // Control: migrated without an announcement, a tenant stays refused from the cached record.
    let silent = app.create_tenant(&unique_slug("silent")).await.id;
    let silent_user = app.create_user(&silent, "s@s.example").await.id;
    mark_behind(&app, &redis, &silent, &silent_user).await;
    let report = tenantd::db::migrations::migrate_tenant_schemas(&database_url, 2).await.expect("migrate");
    assert_eq!(report.migrated_tenants, [Uuid::parse_str(&silent).expect("uuid")], "{report:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = app.users(&silent).get_user(GetUserRequest { id: silent_user.clone() }).await;
    assert_error(stale, Code::Unavailable, "TENANT_SCHEMA_BEHIND");

    // `tenantd migrate` announces what it migrated: served again at once.
    let announced = app.create_tenant(&unique_slug("announced")).await.id;
    let announced_user = app.create_user(&announced, "a@a.example").await.id;
    mark_behind(&app, &redis, &announced, &announced_user).await;
    let mut arguments = vec![
        "tenantd".to_owned(),
        "migrate".to_owned(),
        format!("--migration-database-url={database_url}"),
        format!("--redis-url={redis_url}"),
    ];
    if cluster {
        arguments.push("--redis-cluster".to_owned());
    }
    let tenantd::cli::Command::Migrate(args) =
        <tenantd::cli::Cli as clap::Parser>::try_parse_from(arguments).expect("arguments").command
    else {
        panic!("not the migrate command")
    };
    let migrated_at = tokio::time::Instant::now();
    tenantd::db::migrations::run_command(args).await.expect("tenantd migrate");
    let served = loop {
        match app.users(&announced).get_user(GetUserRequest { id: announced_user.clone() }).await {
            Ok(user) => break user.into_inner(),
            Err(status) => {
                assert_eq!(crate::helpers::reason(&status), "TENANT_SCHEMA_BEHIND", "{status:?}");
                assert!(migrated_at.elapsed() < Duration::from_secs(2), "not served within 2 s of the migration");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(served.id, announced_user);
    println!("served {:?} after tenantd migrate returned", migrated_at.elapsed());
    app.stop().await;
}

/// Median and 99th percentile of `latencies` (sorted in place).
fn percentiles(latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction) as usize];
    (at(0.5), at(0.99))
}

/// The benchmark of docs/performance.md ("Per-request cost of a schema tenant", run alone:
/// `cargo test --release --locked --test api tiers::bench_ -- --ignored --nocapture`): GetUser
/// over gRPC for a pooled and a schema tenant, 8 concurrent callers, rounds alternating.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_get_user_of_a_schema_tenant_against_a_pooled_one() {
    let app = std::sync::Arc::new(spawn_app().await);
    let mut targets = Vec::new();
    for tier in [IsolationTier::Pooled, IsolationTier::Schema] {
        let tenant = app.create_tenant_in(&unique_slug("bgu"), tier).await;
        let user = app.create_user(&tenant.id, "bench@bench.example").await;
        targets.push((tier, tenant.id, user.id));
    }
    const CALLERS: usize = 8;
    const CALLS: usize = 400;
    for round in 0..4 {
        let mut rates = Vec::new();
        for (tier, tenant_id, user_id) in &targets {
            let started = std::time::Instant::now();
            let callers = (0..CALLERS).map(|_| {
                let (app, tenant_id, user_id) = (app.clone(), tenant_id.clone(), user_id.clone());
                tokio::spawn(async move {
                    let mut client = app.users(&tenant_id);
                    let mut latencies = Vec::with_capacity(CALLS);
                    for _ in 0..CALLS {
                        let call = std::time::Instant::now();
                        client.get_user(GetUserRequest { id: user_id.clone() }).await.expect("get user");
                        latencies.push(call.elapsed());
                    }
                    latencies
                })
            });
            let mut latencies = Vec::new();
            for caller in futures_util::future::join_all(callers).await {
                latencies.extend(caller.expect("caller"));
            }
            let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&mut latencies);
            // Round 0 warms the caches and connections; it is printed but not counted.
            println!("BENCH round {round} {tier:?}: {rate:.0} req/s, p50 {p50:?}, p99 {p99:?}");
            rates.push(rate);
        }
        println!("BENCH round {round}: schema/pooled throughput {:.2}", rates[1] / rates[0]);
    }
    std::sync::Arc::into_inner(app).expect("one owner").stop().await;
}

/// The benchmark of docs/performance.md ("The write route's cost", run with the one above):
/// the statements of a write transaction as the app role sends them (BEGIN, the tenant
/// setting, `tenantd_route_write`, an INSERT of a user, COMMIT, in one round trip), with and
/// without the route statement, 4 concurrent connections, rounds alternating. This is the
/// database's share of CreateUser; tenantd's own work is the same with or without it.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_a_write_transaction_with_and_without_the_write_route_statement() {
    let app = spawn_app().await;
    let tenant = app.create_tenant_in(&unique_slug("brw"), IsolationTier::Pooled).await;
    let tenant_id = Uuid::parse_str(&tenant.id).expect("uuid");
    const CLIENTS: usize = 4;
    const TRANSACTIONS: usize = 1000;
    let url = crate::helpers::database_url("tenantd_app", &app.database);
    for round in 0..4 {
        let mut rates = Vec::new();
        for with_route in [false, true] {
            let started = std::time::Instant::now();
            let clients = (0..CLIENTS).map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
                    tokio::spawn(connection);
                    let route = if with_route {
                        format!("{};", tenantd::db::tenant_tx::route_write_statement(tenant_id))
                    } else {
                        String::new()
                    };
                    let mut latencies = Vec::with_capacity(TRANSACTIONS);
                    for _ in 0..TRANSACTIONS {
                        let call = std::time::Instant::now();
                        client
                            .batch_execute(&format!(
                                "BEGIN; {set}; {route} INSERT INTO users (tenant_id, id, email, role) \
                                 VALUES ('{tenant_id}', '{id}', '{id}@bench.example', 'member'); COMMIT",
                                set = tenantd::db::tenant_tx::set_tenant_statement(tenant_id),
                                id = Uuid::now_v7(),
                            ))
                            .await
                            .expect("write");
                        latencies.push(call.elapsed());
                    }
                    latencies
                })
            });
            let mut latencies = Vec::new();
            for client in futures_util::future::join_all(clients).await {
                latencies.extend(client.expect("client"));
            }
            let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(&mut latencies);
            println!("BENCH round {round} route={with_route}: {rate:.0} tx/s, p50 {p50:?}, p99 {p99:?}");
            rates.push(rate);
        }
        println!("BENCH round {round}: with/without route throughput {:.2}", rates[1] / rates[0]);
    }
    app.stop().await;
}
