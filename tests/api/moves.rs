//! Moving live tenants between tiers (decision 0019): the google.longrunning operation, the
//! move under concurrent writes (nothing lost or doubled, reads never fail, other tenants
//! never pause), and a replica killed mid-move.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tenantd::db::tenant_schema::{quote_identifier, schema_name};
use tenantd::db::tenant_tx::route_write_statement;
use tenantd::proto::longrunning::operations_client::OperationsClient;
use tenantd::proto::longrunning::{GetOperationRequest, ListOperationsRequest, Operation, operation};
use tenantd::proto::{CreateUserRequest, GetTenantRequest, ListUsersRequest, MoveTenantRequest, User};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    IsolationTier, Metadata, TestApp, assert_error, connect, pg_admin, replica, spawn_app_with, unique_slug,
};

/// Fast leases and drains, so tests see resumption quickly.
fn fast(config: &mut tenantd::config::Config) {
    fast_operations(config);
    config.operations.move_drain = Duration::from_millis(300);
}

fn operations(
    app: &TestApp,
) -> OperationsClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Metadata>> {
    OperationsClient::with_interceptor(app.channel.clone(), Metadata::platform())
}

use crate::helpers::{fast_operations, operation_metadata as metadata};

async fn get(app: &TestApp, name: &str) -> Operation {
    operations(app)
        .get_operation(GetOperationRequest { name: name.to_owned() })
        .await
        .expect("get operation")
        .into_inner()
}

/// Polls until the operation is done (or `limit` passes).
async fn wait_done(app: &TestApp, name: &str, limit: Duration) -> Operation {
    let started = Instant::now();
    loop {
        let operation = get(app, name).await;
        if operation.done {
            return operation;
        }
        assert!(started.elapsed() < limit, "operation not done after {limit:?}: {:?}", metadata(&operation));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn move_to(app: &TestApp, tenant_id: &str, tier: IsolationTier) -> Operation {
    app.tenants
        .clone()
        .move_tenant(MoveTenantRequest { id: tenant_id.to_owned(), isolation_tier: tier as i32 })
        .await
        .expect("move tenant")
        .into_inner()
}

async fn tier_of(app: &TestApp, tenant_id: &str) -> IsolationTier {
    let selector = Some(tenantd::proto::get_tenant_request::Selector::Id(tenant_id.to_owned()));
    app.tenants
        .clone()
        .get_tenant(GetTenantRequest { selector })
        .await
        .expect("get tenant")
        .into_inner()
        .isolation_tier()
}

/// Every user id of a tenant through the API (paged).
async fn listed_user_ids(app: &TestApp, tenant_id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .users(tenant_id)
            .list_users(ListUsersRequest { page_size: 1000, page_token })
            .await
            .expect("list users")
            .into_inner();
        ids.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// Rows of the tenant's users in the shared table and in its schema (0 if it has none).
async fn rows_per_tier(app: &TestApp, tenant_id: &str) -> (i64, i64) {
    let admin = connect(&pg_admin(), &app.database).await;
    let shared: i64 = admin
        .query_one("SELECT count(*) FROM public.users WHERE tenant_id = $1::text::uuid", &[&tenant_id])
        .await
        .expect("count shared")
        .get(0);
    let schema = schema_name(Uuid::parse_str(tenant_id).expect("uuid"));
    let exists: bool = admin
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema])
        .await
        .expect("schema exists?")
        .get(0);
    let in_schema = if exists {
        admin
            .query_one(&format!("SELECT count(*) FROM {}.users", quote_identifier(&schema)), &[])
            .await
            .expect("count schema")
            .get(0)
    } else {
        0
    };
    (shared, in_schema)
}

/// Inserts `count` users for a tenant directly (as the admin), to give a move something to copy.
async fn seed_users(app: &TestApp, tenant_id: &str, count: i64) {
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute(
            "INSERT INTO public.users (tenant_id, id, email, role)
             SELECT $1::text::uuid, gen_random_uuid(), 'seed' || n || '@seed.example', 'member'
             FROM generate_series(1, $2::bigint) AS n",
            &[&tenant_id, &count],
        )
        .await
        .expect("seed users");
}

/// Writes users to a tenant until `stop`; returns acknowledged ids, the errors, and the
/// slowest write.
async fn write_until(app: &TestApp, tenant_id: &str, stop: Arc<AtomicBool>) -> (Vec<String>, Vec<String>, Duration) {
    let mut client = app.users(tenant_id);
    let (mut acknowledged, mut errors, mut slowest) = (Vec::new(), Vec::new(), Duration::ZERO);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let user = User { email: format!("w{n}-{}@load.example", Uuid::now_v7().simple()), ..Default::default() };
        let started = Instant::now();
        match client.create_user(CreateUserRequest { user: Some(user), ..Default::default() }).await {
            Ok(response) => acknowledged.push(response.into_inner().id),
            Err(status) => errors.push(format!("{:?} {}", status.code(), status.message())),
        }
        slowest = slowest.max(started.elapsed());
    }
    (acknowledged, errors, slowest)
}

#[tokio::test]
async fn a_live_tenant_moves_to_its_own_schema_and_back_without_losing_or_doubling_a_write() {
    let app = Arc::new(spawn_app_with(fast).await);
    let moving = app.create_tenant_in(&unique_slug("mov"), IsolationTier::Pooled).await;
    let other = app.create_tenant_in(&unique_slug("oth"), IsolationTier::Pooled).await;
    seed_users(&app, &moving.id, 5000).await;
    let mut before: BTreeSet<String> = listed_user_ids(&app, &moving.id).await.into_iter().collect();
    assert_eq!(before.len(), 5000);

    let mut other_total = 0;
    for target in [IsolationTier::Schema, IsolationTier::Pooled] {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = [moving.id.clone(), other.id.clone()].map(|tenant_id| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { write_until(&app, &tenant_id, stop).await })
        });
        let reader = {
            let (app, stop, tenant_id) = (app.clone(), stop.clone(), moving.id.clone());
            tokio::spawn(async move {
                let (mut reads, mut failures) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let request = ListUsersRequest { page_size: 10, page_token: String::new() };
                    match app.users(&tenant_id).list_users(request).await {
                        Ok(page) if page.get_ref().users.len() == 10 => reads += 1,
                        Ok(page) => failures.push(format!("short page of {}", page.get_ref().users.len())),
                        Err(status) => failures.push(format!("{:?} {}", status.code(), status.message())),
                    }
                }
                (reads, failures)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = move_to(&app, &moving.id, target).await;
        assert!(started.name.starts_with("operations/"), "{}", started.name);
        assert!(!started.done);
        let finished = wait_done(&app, &started.name, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for writer in writers {
            results.push(writer.await.expect("writer"));
        }
        let (reads, read_failures) = reader.await.expect("reader");

        assert!(matches!(finished.result, Some(operation::Result::Response(_))), "{:?}", finished.result);
        let details = metadata(&finished);
        assert_eq!(tier_of(&app, &moving.id).await, target);
        let (moved_writes, moved_errors, moved_slowest) = &results[0];
        let (other_writes, other_errors, other_slowest) = &results[1];
        assert!(moved_errors.is_empty() && other_errors.is_empty(), "{moved_errors:?} {other_errors:?}");
        assert!(read_failures.is_empty(), "reads failed: {read_failures:?}");
        assert!(reads > 0 && !moved_writes.is_empty() && !other_writes.is_empty(), "control: load ran");

        let listed = listed_user_ids(&app, &moving.id).await;
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "no user listed twice");
        let missing: Vec<&String> =
            before.iter().chain(moved_writes.iter()).filter(|id| !unique.contains(*id)).collect();
        assert!(missing.is_empty(), "{} acknowledged writes lost: {missing:?}", missing.len());
        let (shared, in_schema) = rows_per_tier(&app, &moving.id).await;
        let expected = i64::try_from(unique.len()).expect("count");
        match target {
            IsolationTier::Schema => assert_eq!((shared, in_schema), (0, expected), "only the schema holds it"),
            _ => assert_eq!((shared, in_schema), (expected, 0), "only the shared tables hold it"),
        }
        other_total += other_writes.len();
        let other_rows = listed_user_ids(&app, &other.id).await.len();
        assert_eq!(other_rows, other_total, "the other tenant kept every write");
        println!(
            "move to {target:?}: {} users, details {:?}, slowest write moving {moved_slowest:?} other {other_slowest:?}, \
             reads {reads}",
            unique.len(),
            details.details
        );
        before.extend(moved_writes.iter().cloned());
    }
    let listed = operations(&app)
        .list_operations(ListOperationsRequest {
            filter: format!("tenant_id = \"{}\"", moving.id),
            ..Default::default()
        })
        .await
        .expect("list operations")
        .into_inner();
    assert_eq!(listed.operations.len(), 2, "both moves are listed, newest first");
    let other_ops = operations(&app)
        .list_operations(ListOperationsRequest {
            filter: format!("tenant_id = \"{}\"", other.id),
            ..Default::default()
        })
        .await
        .expect("list operations")
        .into_inner();
    assert!(other_ops.operations.is_empty(), "control: the filter filters");
    Arc::into_inner(app).expect("one owner").stop().await;
}

#[tokio::test]
async fn move_and_operation_requests_are_validated_and_platform_only() {
    let app = spawn_app_with(fast).await;
    let tenant = app.create_tenant_in(&unique_slug("val"), IsolationTier::Pooled).await;
    let mut client = app.tenants.clone();
    let refused = client.move_tenant(MoveTenantRequest { id: "nope".into(), isolation_tier: 0 }).await;
    assert_error(refused, Code::InvalidArgument, "ID_MALFORMED");
    let already = client
        .move_tenant(MoveTenantRequest { id: tenant.id.clone(), isolation_tier: IsolationTier::Pooled as i32 })
        .await;
    assert_error(already, Code::FailedPrecondition, "TENANT_ALREADY_IN_TIER");
    let unknown =
        operations(&app).get_operation(GetOperationRequest { name: format!("operations/{}", Uuid::now_v7()) }).await;
    assert_error(unknown, Code::NotFound, "OPERATION_NOT_FOUND");
    let malformed = operations(&app).get_operation(GetOperationRequest { name: "ops/1".into() }).await;
    assert_error(malformed, Code::InvalidArgument, "FIELD_MALFORMED");
    // Positive control: a real move is found, and a second one while it runs is refused.
    let started = move_to(&app, &tenant.id, IsolationTier::Schema).await;
    let again = client
        .move_tenant(MoveTenantRequest { id: tenant.id.clone(), isolation_tier: IsolationTier::Schema as i32 })
        .await;
    if let Err(status) = again {
        let reason = crate::helpers::reason(&status);
        assert!(reason == "TENANT_OPERATION_IN_PROGRESS" || reason == "TENANT_ALREADY_IN_TIER", "{reason}");
    }
    assert_eq!(get(&app, &started.name).await.name, started.name);
    let done = wait_done(&app, &started.name, Duration::from_secs(30)).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))));
    // An API key cannot reach the operations service.
    let (_, key) = app.create_api_key(&tenant.id, &[crate::helpers::ApiKeyScope::Read]).await;
    let denied = OperationsClient::with_interceptor(app.channel.clone(), Metadata::bearer(&key))
        .get_operation(GetOperationRequest { name: started.name.clone() })
        .await;
    assert_error(denied, Code::PermissionDenied, "API_KEY_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn a_replica_killed_after_the_cutover_leaves_the_tenant_on_one_tier_and_another_finishes_the_move() {
    let app = spawn_app_with(|config| {
        fast(config);
        // Long enough to kill the replica while the move waits after its cutover.
        config.operations.move_drain = Duration::from_secs(30);
    })
    .await;
    let tenant = app.create_tenant_in(&unique_slug("cra"), IsolationTier::Pooled).await;
    seed_users(&app, &tenant.id, 2000).await;
    let started = move_to(&app, &tenant.id, IsolationTier::Schema).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metadata(&get(&app, &started.name).await).phase != "drain" {
        assert!(Instant::now() < deadline, "the move never reached its drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let database = app.kill().await;
    // After the cutover the tenant is served by the schema alone; the source is still complete.
    let (shared, in_schema) = rows_per_tier_in(&database, &tenant.id).await;
    assert_eq!((shared, in_schema), (2000, 2000), "the killed move had not cleaned up yet");

    let replica = replica(database, fast).await;
    assert_eq!(tier_of(&replica, &tenant.id).await, IsolationTier::Schema, "one tier: the target");
    assert_eq!(listed_user_ids(&replica, &tenant.id).await.len(), 2000, "reads work at once");
    let done = wait_done(&replica, &started.name, Duration::from_secs(30)).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);
    assert!(metadata(&done).attempts >= 2, "resumed by another claim");
    assert_eq!(rows_per_tier(&replica, &tenant.id).await, (0, 2000), "the resumed move removed the source");
    replica.stop().await;
}

async fn rows_per_tier_in(database: &str, tenant_id: &str) -> (i64, i64) {
    let admin = connect(&pg_admin(), database).await;
    let shared: i64 = admin
        .query_one("SELECT count(*) FROM public.users WHERE tenant_id = $1::text::uuid", &[&tenant_id])
        .await
        .expect("count")
        .get(0);
    let schema = schema_name(Uuid::parse_str(tenant_id).expect("uuid"));
    let in_schema: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {}.users", quote_identifier(&schema)), &[])
        .await
        .expect("count")
        .get(0);
    (shared, in_schema)
}

#[tokio::test]
async fn the_write_route_statement_is_its_own_statement_built_from_the_uuid_and_names_the_schema_schema_name_does() {
    let tenant_id = Uuid::now_v7();
    let statement = route_write_statement(tenant_id);
    assert_eq!(statement, format!("SELECT tenantd_route_write('{tenant_id}')"));
    // The SQL function builds the schema name itself: it must be the one Rust builds.
    let app = spawn_app_with(fast).await;
    let tenant = app.create_tenant_in(&unique_slug("rte"), IsolationTier::Schema).await;
    let mut admin = connect(&pg_admin(), &app.database).await;
    let transaction = admin.transaction().await.expect("begin");
    transaction.execute("SELECT tenantd_route_write($1::text::uuid)", &[&tenant.id]).await.expect("route");
    let path: String = transaction.query_one("SELECT current_setting('search_path')", &[]).await.expect("path").get(0);
    transaction.rollback().await.expect("rollback");
    let expected = format!("{}, public", quote_identifier(&schema_name(Uuid::parse_str(&tenant.id).expect("uuid"))));
    assert_eq!(path, expected.replace('"', ""), "the function routes to the schema schema_name() names");
    app.stop().await;
}

/// The benchmark of docs/performance.md (run alone: `cargo test --locked --test api
/// moves::bench_ -- --ignored --nocapture`): a 100,000-row tenant moved to its own schema and
/// back under write load on it and on another tenant.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_moving_a_100000_row_tenant_under_write_load() {
    let app = Arc::new(spawn_app_with(fast).await);
    let moving = app.create_tenant_in(&unique_slug("ben"), IsolationTier::Pooled).await;
    let other = app.create_tenant_in(&unique_slug("bot"), IsolationTier::Pooled).await;
    seed_users(&app, &moving.id, 100_000).await;
    for target in [IsolationTier::Schema, IsolationTier::Pooled] {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = [moving.id.clone(), other.id.clone()].map(|tenant_id| {
            let (app, stop) = (app.clone(), stop.clone());
            tokio::spawn(async move { write_until(&app, &tenant_id, stop).await })
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started_at = Instant::now();
        let started = move_to(&app, &moving.id, target).await;
        let finished = wait_done(&app, &started.name, Duration::from_secs(300)).await;
        let total = started_at.elapsed();
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for writer in writers {
            results.push(writer.await.expect("writer"));
        }
        let details = metadata(&finished).details.expect("details");
        let field = |name: &str| details.fields.get(name).cloned();
        println!(
            "BENCH move to {target:?}: total {total:?} (includes drain 300 ms); write_pause_ms {:?}; copy_ms {:?}; \
             catch_up_rounds {:?}; slowest write on the moving tenant {:?} ({} writes, {} errors), on the other {:?} \
             ({} writes, {} errors)",
            field("write_pause_ms"),
            field("copy_ms"),
            field("catch_up_rounds"),
            results[0].2,
            results[0].0.len(),
            results[0].1.len(),
            results[1].2,
            results[1].0.len(),
            results[1].1.len(),
        );
    }
    Arc::into_inner(app).expect("one owner").stop().await;
}

#[tokio::test]
async fn a_replica_killed_before_the_cutover_leaves_the_tenant_on_its_source_and_another_redoes_the_move() {
    let app = spawn_app_with(fast).await;
    let tenant = app.create_tenant_in(&unique_slug("crb"), IsolationTier::Pooled).await;
    // Enough rows that the copy is still running when the replica is killed.
    seed_users(&app, &tenant.id, 50_000).await;
    let started = move_to(&app, &tenant.id, IsolationTier::Schema).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = metadata(&get(&app, &started.name).await);
        if seen.attempts >= 1 {
            assert!(matches!(seen.phase.as_str(), "copy" | "catch_up"), "killed before the cutover: {}", seen.phase);
            break;
        }
        assert!(Instant::now() < deadline, "no worker claimed the move");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let database = app.kill().await;
    let admin = connect(&pg_admin(), &database).await;
    let tier: String = admin
        .query_one("SELECT isolation_tier FROM tenants WHERE id = $1::text::uuid", &[&tenant.id])
        .await
        .expect("tier")
        .get(0);
    assert_eq!(tier, "pooled", "before the cutover the tenant is on its source");

    let replica = Arc::new(replica(database, fast).await);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (replica, stop, tenant_id) = (replica.clone(), stop.clone(), tenant.id.clone());
        tokio::spawn(async move { write_until(&replica, &tenant_id, stop).await })
    };
    // Reads on the new replica never fail while the move is redone: the tenant is served
    // from one tier at a time (the source until the cutover, then the target).
    let (mut reads, mut failures) = (0, Vec::new());
    let done = loop {
        let request = ListUsersRequest { page_size: 10, page_token: String::new() };
        match replica.users(&tenant.id).list_users(request).await {
            Ok(page) if page.get_ref().users.len() == 10 => reads += 1,
            Ok(page) => failures.push(format!("short page of {}", page.get_ref().users.len())),
            Err(status) => failures.push(format!("{:?} {}", status.code(), status.message())),
        }
        let operation = get(&replica, &started.name).await;
        if operation.done {
            break operation;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(60), "the move was not redone");
    };
    stop.store(true, Ordering::Relaxed);
    let (written, write_errors, _) = writer.await.expect("writer");
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    assert!(write_errors.is_empty(), "writes failed: {write_errors:?}");
    assert!(reads > 0 && !written.is_empty(), "control: the load ran");
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);
    assert!(metadata(&done).attempts >= 2, "resumed by another claim: {}", metadata(&done).attempts);
    assert_eq!(tier_of(&replica, &tenant.id).await, IsolationTier::Schema);
    let listed: BTreeSet<String> = listed_user_ids(&replica, &tenant.id).await.into_iter().collect();
    let missing = written.iter().filter(|id| !listed.contains(*id)).count();
    assert_eq!(missing, 0, "no acknowledged write was lost");
    assert_eq!(listed.len(), 50_000 + written.len(), "the seeded rows and every write, once each");
    let expected = i64::try_from(listed.len()).expect("count");
    assert_eq!(rows_per_tier(&replica, &tenant.id).await, (0, expected), "only the target holds the rows");
    Arc::into_inner(replica).expect("one owner").stop().await;
}

#[tokio::test]
async fn the_cutover_records_a_tier_moved_event_that_watch_events_delivers() {
    let app = spawn_app_with(fast).await;
    let mut stream = crate::events::watch(&app, Metadata::platform(), Default::default()).await.expect("watch events");
    let tenant = app.create_tenant_in(&unique_slug("evm"), IsolationTier::Pooled).await;
    let started = move_to(&app, &tenant.id, IsolationTier::Schema).await;
    let done = wait_done(&app, &started.name, Duration::from_secs(30)).await;
    assert!(matches!(done.result, Some(operation::Result::Response(_))), "{:?}", done.result);
    let operation_id = started.name.trim_start_matches("operations/").to_owned();

    let mut events = Vec::new();
    while !events.iter().any(|event: &tenantd::proto::TenantEvent| event.event_type == "tenant.tier_moved") {
        events.extend(crate::events::collect(&mut stream, 1).await);
    }
    let types: Vec<&str> = events.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(types, ["tenant.create", "tenant.tier_moved"], "control: the watch sees the tenant's other events");
    let moved = &events[1];
    assert_eq!((moved.tenant_id.as_str(), moved.resource_type.as_str()), (tenant.id.as_str(), "tenant"));
    assert_eq!(moved.resource_id, tenant.id);
    assert_eq!(moved.actor_type, "bootstrap", "the actor who started the move");
    let details = moved.details.as_ref().expect("details");
    let text = |name: &str| match details.fields.get(name).and_then(|value| value.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(text)) => text,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!((text("from"), text("to"), text("operation_id")), ("pooled".into(), "schema".into(), operation_id));
    app.stop().await;
}

#[tokio::test]
async fn a_move_cancelled_before_its_cutover_leaves_the_tenant_where_it_was_and_drops_the_copy() {
    let app = spawn_app_with(fast).await;
    let tenant = app.create_tenant_in(&unique_slug("can"), IsolationTier::Pooled).await;
    // Enough rows that the copy is still running when the cancel arrives.
    seed_users(&app, &tenant.id, 50_000).await;
    let started = move_to(&app, &tenant.id, IsolationTier::Schema).await;
    operations(&app)
        .cancel_operation(tenantd::proto::longrunning::CancelOperationRequest { name: started.name.clone() })
        .await
        .expect("cancel");
    let done = wait_done(&app, &started.name, Duration::from_secs(60)).await;
    let Some(operation::Result::Error(status)) = &done.result else { panic!("not cancelled: {:?}", done.result) };
    assert_eq!(status.code, Code::Cancelled as i32);
    assert!(metadata(&done).cancel_requested);
    assert_eq!(tier_of(&app, &tenant.id).await, IsolationTier::Pooled, "the tenant never left");
    assert_eq!(rows_per_tier(&app, &tenant.id).await, (50_000, 0), "the copy is gone, the source intact");
    assert_eq!(listed_user_ids(&app, &tenant.id).await.len(), 50_000, "and it serves");
    // Cancelling a finished operation changes nothing; deleting it forgets it.
    operations(&app)
        .cancel_operation(tenantd::proto::longrunning::CancelOperationRequest { name: started.name.clone() })
        .await
        .expect("cancel again");
    operations(&app)
        .delete_operation(tenantd::proto::longrunning::DeleteOperationRequest { name: started.name.clone() })
        .await
        .expect("delete");
    let gone = operations(&app).get_operation(GetOperationRequest { name: started.name.clone() }).await;
    assert_error(gone, Code::NotFound, "OPERATION_NOT_FOUND");
    app.stop().await;
}
