//! Verified purge (decision 0020): refused unless deleted, removes every row of the tenant in
//! every table with a tenant_id column (on both tiers) and its Redis keys while another
//! tenant keeps all of its own, releases the slug, leaves a receipt, resumes after a crash,
//! and the retention sweep purges old deleted tenants only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tenantd::db::tenant_schema::schema_name;
use tenantd::proto::longrunning::operations_client::OperationsClient;
use tenantd::proto::longrunning::{GetOperationRequest, Operation, operation};
use tenantd::proto::tenant::State;
use tenantd::proto::{
    CreateTenantRequest, DeleteTenantRequest, GetPurgeReceiptRequest, GetTenantRequest, PurgeTenantRequest, Tenant,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    ApiKeyScope, IsolationTier, Metadata, TestApp, assert_error, connect, pg_admin, redis_url, replica, spawn_app_in,
    spawn_app_with, unique_slug,
};

use crate::helpers::{fast_operations as fast, operation_metadata as metadata};

async fn get_operation(app: &TestApp, name: &str) -> Operation {
    OperationsClient::with_interceptor(app.channel.clone(), Metadata::platform())
        .get_operation(GetOperationRequest { name: name.to_owned() })
        .await
        .expect("get operation")
        .into_inner()
}

async fn wait_done(app: &TestApp, name: &str, limit: Duration) -> Operation {
    let started = Instant::now();
    loop {
        let operation = get_operation(app, name).await;
        if operation.done {
            return operation;
        }
        assert!(started.elapsed() < limit, "operation not done after {limit:?}: {:?}", metadata(&operation));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tenant(app: &TestApp, id: &str) -> Tenant {
    let selector = Some(tenantd::proto::get_tenant_request::Selector::Id(id.to_owned()));
    app.tenants.clone().get_tenant(GetTenantRequest { selector }).await.expect("get tenant").into_inner()
}

async fn delete(app: &TestApp, id: &str) {
    app.tenants
        .clone()
        .delete_tenant(DeleteTenantRequest { id: id.to_owned(), etag: String::new() })
        .await
        .expect("delete tenant");
}

/// A tenant with rows in many tables: users, an API key (and its use), a domain, the
/// platform idempotency record of its creation, audit events, and Redis keys.
async fn populated_tenant(app: &TestApp, prefix: &str, tier: IsolationTier) -> Tenant {
    let slug = unique_slug(prefix);
    let created = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: slug.clone(),
                display_name: format!("Tenant {slug}"),
                isolation_tier: tier as i32,
                domains: vec![format!("{slug}.example.com")],
                ..Default::default()
            }),
            request_id: Uuid::new_v4().to_string(),
        })
        .await
        .expect("create tenant")
        .into_inner();
    for n in 0..3 {
        app.create_user(&created.id, &format!("user{n}@{slug}.example")).await;
    }
    let (_, key) = app.create_api_key(&created.id, &[ApiKeyScope::Read]).await;
    // A data-plane call with the key caches the key and the tenant in Redis.
    app.users_with(Metadata::bearer(&key))
        .list_users(tenantd::proto::ListUsersRequest { page_size: 10, page_token: String::new() })
        .await
        .expect("list users with the key");
    let _: () = redis_query(redis::cmd("SET").arg(format!("t:{{{}}}:purge-test", created.id)).arg("x")).await;
    created
}

/// Runs `command` on the test Redis: one server, or (TENANTD_TEST_REDIS_CLUSTER) the cluster,
/// routed by the command's key.
async fn redis_query<T: redis::FromRedisValue>(command: &redis::Cmd) -> T {
    let url = redis_url();
    if std::env::var_os("TENANTD_TEST_REDIS_CLUSTER").is_some() {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        let client = redis::cluster::ClusterClient::new(nodes).expect("cluster client");
        let mut connection = client.get_async_connection().await.expect("cluster connection");
        return command.query_async(&mut connection).await.expect("redis command");
    }
    let client = redis::Client::open(url).expect("redis client");
    let mut connection = client.get_multiplexed_async_connection().await.expect("redis");
    command.query_async(&mut connection).await.expect("redis command")
}

/// Which of the tenant's known Redis keys exist: the test's own, its cached record and its
/// usage counter (EXISTS by key, so that it works on a cluster too).
async fn redis_keys(tenant_id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for part in ["purge-test", "record", "usage"] {
        let key = format!("t:{{{tenant_id}}}:{part}");
        let exists: bool = redis_query(redis::cmd("EXISTS").arg(&key)).await;
        if exists {
            found.push(key);
        }
    }
    found
}

/// The tenant's rows in every table with a tenant_id column, in every schema, by
/// `schema.table`, counted by the admin (no RLS in the way), plus its platform idempotency
/// records; tables where it has none are left out.
pub(crate) async fn rows_everywhere(app: &TestApp, tenant_id: &str) -> BTreeMap<String, i64> {
    let admin = connect(&pg_admin(), &app.database).await;
    let tables = admin
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE a.attname = 'tenant_id' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .expect("catalog");
    assert!(tables.len() >= 8, "the catalog lists the tenant tables: {}", tables.len());
    let mut rows = BTreeMap::new();
    for table in tables {
        let (schema, name): (String, String) = (table.get(0), table.get(1));
        let count: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".\"{name}\" WHERE tenant_id = $1::text::uuid"),
                &[&tenant_id],
            )
            .await
            .expect("count")
            .get(0);
        if count > 0 {
            rows.insert(format!("{schema}.{name}"), count);
        }
    }
    let idempotency: i64 = admin
        .query_one("SELECT count(*) FROM platform_idempotency_records WHERE response ->> 'id' = $1", &[&tenant_id])
        .await
        .expect("count idempotency")
        .get(0);
    if idempotency > 0 {
        rows.insert("public.platform_idempotency_records".to_owned(), idempotency);
    }
    rows
}

/// What is left of a purged tenant in tables with a tenant_id column: its `tenant.purge`
/// event and that event's row in the event index (which says only that a transaction wrote
/// an event of the tenant).
fn purge_leftovers() -> BTreeMap<String, i64> {
    BTreeMap::from([("public.audit_events".to_owned(), 1), ("public.event_transactions".to_owned(), 1)])
}

pub(crate) async fn schema_exists(app: &TestApp, tenant_id: &str) -> bool {
    let admin = connect(&pg_admin(), &app.database).await;
    let schema = schema_name(Uuid::parse_str(tenant_id).expect("uuid"));
    admin
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema])
        .await
        .expect("schema exists?")
        .get(0)
}

#[tokio::test]
async fn only_a_deleted_tenant_can_be_purged_and_only_by_the_platform() {
    let app = spawn_app_with(fast).await;
    let live = app.create_tenant(&unique_slug("live")).await;
    let mut client = app.tenants.clone();
    let refused = client.purge_tenant(PurgeTenantRequest { id: live.id.clone() }).await;
    assert_error(refused, Code::FailedPrecondition, "TENANT_NOT_DELETED");
    let malformed = client.purge_tenant(PurgeTenantRequest { id: "nope".into() }).await;
    assert_error(malformed, Code::InvalidArgument, "ID_MALFORMED");
    let unknown = client.purge_tenant(PurgeTenantRequest { id: Uuid::now_v7().to_string() }).await;
    assert_error(unknown, Code::NotFound, "TENANT_NOT_FOUND");
    let no_receipt = client.get_purge_receipt(GetPurgeReceiptRequest { tenant_id: live.id.clone() }).await;
    assert_error(no_receipt, Code::NotFound, "PURGE_RECEIPT_NOT_FOUND");
    // A tenant API key is not a platform credential.
    let (_, key) = app.create_api_key(&live.id, &[ApiKeyScope::Read, ApiKeyScope::Write]).await;
    let mut with_key = tenantd::proto::tenant_service_client::TenantServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::bearer(&key),
    );
    let denied = with_key.purge_tenant(PurgeTenantRequest { id: live.id.clone() }).await;
    assert_error(denied, Code::PermissionDenied, "API_KEY_NOT_ALLOWED");
    assert_eq!(tenant(&app, &live.id).await.state(), State::Active, "nothing happened to it");

    // Positive control: once deleted, the same tenant is accepted and purged.
    delete(&app, &live.id).await;
    let started = client.purge_tenant(PurgeTenantRequest { id: live.id.clone() }).await.expect("purge").into_inner();
    let done = wait_done(&app, &started.name, Duration::from_secs(30)).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);
    assert_eq!(metadata(&done).kind, "purge_tenant");
    // Purging a purged tenant answers with the purge that did it.
    let again = client.purge_tenant(PurgeTenantRequest { id: live.id.clone() }).await.expect("again").into_inner();
    assert_eq!(again.name, started.name);
    assert!(again.done);
    app.stop().await;
}

async fn purge_removes_every_row_and_key_of_the_tenant_and_nothing_else(tier: IsolationTier) {
    let app = spawn_app_in(tier, fast).await;
    let purged = populated_tenant(&app, "gone", tier).await;
    let kept = populated_tenant(&app, "kept", tier).await;
    let before = rows_everywhere(&app, &purged.id).await;
    let kept_before = rows_everywhere(&app, &kept.id).await;
    assert!(before.len() >= 5, "the tenant has rows in many tables: {before:?}");
    assert!(!redis_keys(&purged.id).await.is_empty(), "and Redis keys");
    assert_eq!(schema_exists(&app, &purged.id).await, tier == IsolationTier::Schema);

    delete(&app, &purged.id).await;
    let done = app.purge_tenant(&purged.id).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);

    // Everything of the purged tenant is gone but its tenant.purge event.
    let after = rows_everywhere(&app, &purged.id).await;
    assert_eq!(after, purge_leftovers(), "only the purge event (and its index row) is left");
    let admin = connect(&pg_admin(), &app.database).await;
    let action: String = admin
        .query_one("SELECT action FROM audit_events WHERE tenant_id = $1::text::uuid", &[&purged.id])
        .await
        .expect("the event")
        .get(0);
    assert_eq!(action, "tenant.purge");
    assert!(!schema_exists(&app, &purged.id).await, "no schema is left");
    assert_eq!(redis_keys(&purged.id).await, Vec::<String>::new(), "no Redis key is left");
    // Positive control: the other tenant keeps every row and key.
    assert_eq!(rows_everywhere(&app, &kept.id).await, kept_before, "the other tenant is untouched");
    assert!(redis_keys(&kept.id).await.contains(&format!("t:{{{}}}:purge-test", kept.id)));
    assert_eq!(schema_exists(&app, &kept.id).await, tier == IsolationTier::Schema);

    // The platform sees the event through the API too, with the actor that purged (reading
    // resolves the tenant, which may cache the tombstone's record again: state only).
    let events = app
        .tenants
        .clone()
        .list_tenant_audit_events(tenantd::proto::ListTenantAuditEventsRequest {
            tenant_id: purged.id.clone(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list the purged tenant's events")
        .into_inner()
        .audit_events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].action.as_str(), events[0].actor_type.as_str()), ("tenant.purge", "bootstrap"));
    // The tombstone, and the slug released.
    let tombstone = tenant(&app, &purged.id).await;
    assert_eq!(tombstone.state(), State::Purged);
    assert!(tombstone.slug.is_empty() && tombstone.display_name.is_empty() && tombstone.purge_time.is_some());
    let resolve = |id: &str| tenantd::proto::ResolveTenantRequest {
        identifier: Some(tenantd::proto::resolve_tenant_request::Identifier::Id(id.to_owned())),
    };
    let gone = app.tenants.clone().resolve_tenant(resolve(&purged.id)).await;
    assert_error(gone, Code::NotFound, "TENANT_NOT_FOUND");
    let data_plane = app
        .users(&purged.id)
        .list_users(tenantd::proto::ListUsersRequest { page_size: 10, page_token: String::new() })
        .await;
    assert_error(data_plane, Code::NotFound, "TENANT_NOT_FOUND");
    // Positive control: the other tenant resolves and serves.
    app.tenants.clone().resolve_tenant(resolve(&kept.id)).await.expect("the other tenant resolves");
    let reused = app.create_tenant_in(&purged.slug, tier).await;
    assert_eq!(reused.slug, purged.slug, "the slug can be taken again");
    assert_ne!(reused.id, purged.id);

    // The receipt counts what there was.
    let receipt = app
        .tenants
        .clone()
        .get_purge_receipt(GetPurgeReceiptRequest { tenant_id: purged.id.clone() })
        .await
        .expect("receipt")
        .into_inner();
    assert_eq!(receipt.tenant_id, purged.id);
    assert_eq!(receipt.operation, done.name);
    assert_eq!(receipt.purged_by, "bootstrap");
    assert_eq!(receipt.rows_found, 0);
    assert_eq!(receipt.redis_status, "removed");
    assert!(receipt.redis_keys_removed >= 2, "{}", receipt.redis_keys_removed);
    let users_table = match tier {
        IsolationTier::Schema => format!("{}.users", schema_name(Uuid::parse_str(&purged.id).expect("uuid"))),
        _ => "public.users".to_owned(),
    };
    assert_eq!(receipt.removed_rows.get(&users_table), Some(&3), "{:?}", receipt.removed_rows);
    for (table, rows) in &before {
        // The audit events counted include the purge_start event (and its index row),
        // written before the count.
        if table != "public.audit_events" && table != "public.event_transactions" {
            assert_eq!(receipt.removed_rows.get(table), Some(rows), "{table}: {:?}", receipt.removed_rows);
        }
    }
    assert!(receipt.removed_rows["public.audit_events"] > before["public.audit_events"]);
    assert!(receipt.scanned_tables.contains(&"public.users".to_owned()));
    assert!(!receipt.scanned_tables.iter().any(|table| table.ends_with(".tenant_purge_receipts")));
    // Positive control: the other tenant has no receipt.
    let none = app.tenants.clone().get_purge_receipt(GetPurgeReceiptRequest { tenant_id: kept.id.clone() }).await;
    assert_error(none, Code::NotFound, "PURGE_RECEIPT_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn a_purge_removes_every_row_and_key_of_a_pooled_tenant_and_nothing_of_another() {
    purge_removes_every_row_and_key_of_the_tenant_and_nothing_else(IsolationTier::Pooled).await;
}

#[tokio::test]
async fn a_purge_removes_every_row_key_and_the_schema_of_a_schema_tenant_and_nothing_of_another() {
    purge_removes_every_row_and_key_of_the_tenant_and_nothing_else(IsolationTier::Schema).await;
}

/// Inserts `count` users for a pooled tenant directly (as the admin).
async fn seed_users(app: &TestApp, tenant_id: &str, count: i64) {
    seed_users_in(app, tenant_id, count, IsolationTier::Pooled).await;
}

/// Inserts `count` users for a tenant directly (as the admin), in its tier's table.
async fn seed_users_in(app: &TestApp, tenant_id: &str, count: i64, tier: IsolationTier) {
    let table = match tier {
        IsolationTier::Schema => format!("\"{}\".users", schema_name(Uuid::parse_str(tenant_id).expect("uuid"))),
        _ => "public.users".to_owned(),
    };
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute(
            &format!(
                "INSERT INTO {table} (tenant_id, id, email, role)
                 SELECT $1::text::uuid, gen_random_uuid(), 'seed' || n || '@seed.example', 'member'
                 FROM generate_series(1, $2::bigint) AS n"
            ),
            &[&tenant_id, &count],
        )
        .await
        .expect("seed users");
}

#[tokio::test]
async fn a_replica_killed_while_a_purge_deletes_rows_leaves_it_to_another_that_finishes_with_exact_counts() {
    let configure = |config: &mut tenantd::config::Config| {
        fast(config);
        config.operations.purge_batch_rows = 5;
    };
    let app = spawn_app_with(configure).await;
    let purged = app.create_tenant(&unique_slug("crash")).await;
    let kept = app.create_tenant(&unique_slug("calm")).await;
    seed_users(&app, &purged.id, 4000).await;
    seed_users(&app, &kept.id, 50).await;
    delete(&app, &purged.id).await;
    let started = app
        .tenants
        .clone()
        .purge_tenant(PurgeTenantRequest { id: purged.id.clone() })
        .await
        .expect("purge")
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = metadata(&get_operation(&app, &started.name).await);
        let removed =
            current.details.as_ref().and_then(|details| details.fields.get("removed_rows")).and_then(|value| {
                match &value.kind {
                    Some(prost_types::value::Kind::NumberValue(number)) => Some(*number),
                    _ => None,
                }
            });
        if current.phase == "rows" && removed.is_some_and(|removed| removed > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the purge never got into its rows: {current:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let database = app.kill().await;
    let admin = connect(&pg_admin(), &database).await;
    let left: i64 = admin
        .query_one("SELECT count(*) FROM users WHERE tenant_id = $1::text::uuid", &[&purged.id])
        .await
        .expect("count")
        .get(0);
    assert!(left > 0 && left < 4000, "killed part-way through the rows: {left} left");

    let replica = replica(database, configure).await;
    let done = wait_done(&replica, &started.name, Duration::from_secs(60)).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);
    assert!(metadata(&done).attempts >= 2, "resumed by another claim");
    let receipt = replica
        .tenants
        .clone()
        .get_purge_receipt(GetPurgeReceiptRequest { tenant_id: purged.id.clone() })
        .await
        .expect("receipt")
        .into_inner();
    assert_eq!(receipt.removed_rows.get("public.users"), Some(&4000), "counted before the crash, exactly");
    assert_eq!(rows_everywhere(&replica, &purged.id).await, purge_leftovers());
    // Positive control: the other tenant's rows are all there.
    assert_eq!(rows_everywhere(&replica, &kept.id).await.get("public.users"), Some(&50));
    replica.stop().await;
}

#[tokio::test]
async fn the_retention_sweep_purges_a_tenant_deleted_long_ago_and_not_one_deleted_just_now() {
    let app = spawn_app_with(|config| {
        fast(config);
        config.operations.purge_retention = Duration::from_secs(3600);
    })
    .await;
    let old = app.create_tenant(&unique_slug("old")).await;
    let fresh = app.create_tenant(&unique_slug("new")).await;
    delete(&app, &old.id).await;
    delete(&app, &fresh.id).await;
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute("UPDATE tenants SET delete_time = now() - interval '2 hours' WHERE id = $1::text::uuid", &[&old.id])
        .await
        .expect("age the deletion");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tenant(&app, &old.id).await.state() != State::Purged {
        assert!(Instant::now() < deadline, "the old tenant was never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receipt = app
        .tenants
        .clone()
        .get_purge_receipt(GetPurgeReceiptRequest { tenant_id: old.id.clone() })
        .await
        .expect("receipt")
        .into_inner();
    assert_eq!(receipt.purged_by, "retention");
    // Several sweeps later, the fresh one is still only deleted (restorable).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(tenant(&app, &fresh.id).await.state(), State::Deleted);
    app.stop().await;
}

/// Writes users to a tenant until `stop`; returns every write's latency (sorted) and the
/// number of errors.
async fn latencies_until(
    app: &TestApp,
    tenant_id: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Duration>, usize) {
    use std::sync::atomic::Ordering;
    let mut client = app.users(tenant_id);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let user =
            tenantd::proto::User { email: format!("w-{}@load.example", Uuid::now_v7().simple()), ..Default::default() };
        let started = Instant::now();
        let request = tenantd::proto::CreateUserRequest { user: Some(user), ..Default::default() };
        if client.create_user(request).await.is_err() {
            errors += 1;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    (latencies, errors)
}

fn p99(latencies: &[Duration]) -> Duration {
    latencies.get(latencies.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default()
}

/// Purge time and longest batch of a 100,000-row tenant, and another tenant's p99 write
/// latency during the purge against the same load without it, in one run, on each tier:
/// `cargo nextest run --test api --run-ignored only -E 'test(/bench_purging/)' --no-capture`.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_purging_a_100000_row_tenant_while_another_tenant_writes() {
    for tier in [IsolationTier::Pooled, IsolationTier::Schema] {
        bench_purge(tier).await;
    }
}

async fn bench_purge(tier: IsolationTier) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = Arc::new(spawn_app_with(fast).await);
    let purged = app.create_tenant_in(&unique_slug("big"), tier).await;
    let other = app.create_tenant(&unique_slug("busy")).await;
    seed_users_in(&app, &purged.id, 100_000, tier).await;
    delete(&app, &purged.id).await;
    let load = |stop: Arc<AtomicBool>| {
        let (app, tenant_id) = (app.clone(), other.id.clone());
        tokio::spawn(async move { latencies_until(&app, &tenant_id, stop).await })
    };
    // Without a purge, for about as long as the purge takes (measured below; 5 s first).
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = load(stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let (baseline, baseline_errors) = baseline.await.expect("baseline writer");

    let stop = Arc::new(AtomicBool::new(false));
    let during = load(stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started_at = Instant::now();
    let started = app
        .tenants
        .clone()
        .purge_tenant(PurgeTenantRequest { id: purged.id.clone() })
        .await
        .expect("purge")
        .into_inner();
    let finished = wait_done(&app, &started.name, Duration::from_secs(600)).await;
    let total = started_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (during, during_errors) = during.await.expect("writer");
    assert!(matches!(finished.result, Some(operation::Result::Response(_))), "{:?}", finished.result);
    let details = metadata(&finished).details.expect("details");
    let field = |name: &str| details.fields.get(name).and_then(|value| value.kind.clone());
    let (p99_without, p99_during) = (p99(&baseline), p99(&during));
    println!(
        "BENCH purge of 100000 rows ({tier:?}): total {total:?}; batches {:?}; longest batch {:?} ms; schema drop {:?} ms; other tenant's p99 write \
         {p99_during:?} during ({} writes, {during_errors} errors) vs {p99_without:?} without ({} writes, \
         {baseline_errors} errors): ratio {:.2}",
        field("batches"),
        field("longest_batch_ms"),
        field("schema_drop_ms"),
        during.len(),
        baseline.len(),
        p99_during.as_secs_f64() / p99_without.as_secs_f64().max(1e-9),
    );
    Arc::into_inner(app).expect("one owner").stop().await;
}

#[tokio::test]
async fn without_a_provisioning_database_a_purge_is_unavailable_and_nothing_changes() {
    let app = spawn_app_with(|config| config.database.provisioning_url = None).await;
    let deleted = app.create_tenant(&unique_slug("noprov")).await;
    delete(&app, &deleted.id).await;
    let refused = app.tenants.clone().purge_tenant(PurgeTenantRequest { id: deleted.id.clone() }).await;
    assert_error(refused, Code::Unavailable, "SCHEMA_TIER_UNAVAILABLE");
    // Positive control: the tenant is still deleted, so undeletable.
    assert_eq!(tenant(&app, &deleted.id).await.state(), State::Deleted);
    app.stop().await;
}
