//! grpc.health.v1 readiness, liveness and dependencies; reflection; graceful shutdown.

use std::time::{Duration, Instant};

use tenantd::config::SecretString;
use tenantd::proto::{GetUserRequest, ListUsersRequest};
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{create_database, migrate, spawn_app, spawn_app_with, start, test_config, unique_slug};
use crate::throwaway::{ThrowawayRedis, free_port};

#[tokio::test]
async fn readiness_is_not_serving_until_the_database_is_migrated() {
    let database = create_database().await;
    let app = start(database.clone(), test_config(&database)).await;
    assert_eq!(app.status("liveness").await, ServingStatus::Serving, "liveness never depends on the database");
    assert_eq!(app.status("").await, ServingStatus::NotServing, "not ready before migrations");
    // Several probe intervals later it is still not ready.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.status("").await, ServingStatus::NotServing);
    assert_eq!(app.status("tenantd.v1.UserService").await, ServingStatus::NotServing);
    let early = app.tenants.clone().list_tenants(tenantd::proto::ListTenantsRequest::default()).await;
    let refused = early.expect_err("no tables yet");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "an unmigrated database is UNAVAILABLE, not INTERNAL");
    assert!(refused.message().contains("run tenantd migrate"), "{}", refused.message());

    migrate(&database).await;
    let took = app.wait_for_status("", ServingStatus::Serving).await;
    println!("readiness flipped to SERVING {took:?} after migrations");
    assert_eq!(app.status("tenantd.v1.TenantService").await, ServingStatus::Serving);
    assert_eq!(app.status("tenantd.v1.UserService").await, ServingStatus::Serving);
    assert_eq!(app.status("postgres").await, ServingStatus::Serving);
    app.tenants
        .clone()
        .list_tenants(tenantd::proto::ListTenantsRequest::default())
        .await
        .expect("served once migrated");
    app.stop().await;
}

#[tokio::test]
async fn without_redis_the_service_stays_ready_and_serves_then_recovers_when_redis_returns() {
    let port = free_port();
    let app = spawn_app_with(|config| config.redis.url = SecretString::from(format!("redis://127.0.0.1:{port}"))).await;
    assert_eq!(app.status("redis").await, ServingStatus::NotServing);
    assert_eq!(app.status("").await, ServingStatus::Serving, "Redis is not required for readiness");
    assert_eq!(app.status("postgres").await, ServingStatus::Serving);

    // The data plane works from the database alone.
    let tenant = app.create_tenant(&unique_slug("r")).await.id;
    let user = app.create_user(&tenant, "r@r.example").await;
    let got = app.users(&tenant).get_user(GetUserRequest { id: user.id.clone() }).await.expect("served without Redis");
    assert_eq!(got.into_inner(), user);
    assert_eq!(app.status("redis").await, ServingStatus::NotServing);

    // Redis comes up on that port: tenantd notices by itself, without a restart.
    let _redis = ThrowawayRedis::start_on(port);
    let took = app.wait_for_status("redis", ServingStatus::Serving).await;
    println!("redis flipped to SERVING {took:?} after it started");
    app.users(&tenant).list_users(ListUsersRequest::default()).await.expect("served with Redis");
    app.stop().await;
}

#[tokio::test]
async fn with_redis_up_every_dependency_is_serving() {
    let app = spawn_app().await;
    app.wait_for_status("redis", ServingStatus::Serving).await;
    assert_eq!(app.status("postgres").await, ServingStatus::Serving);
    assert_eq!(app.status("liveness").await, ServingStatus::Serving);
    app.stop().await;
}

#[tokio::test]
async fn reflection_lists_both_services_without_any_metadata() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(tokio_stream::once(request)).await.expect("reflection").into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    let expected =
        ["tenantd.v1.TenantService", "tenantd.v1.OperatorService", "tenantd.v1.UserService", "grpc.health.v1.Health"];
    for expected in expected {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_turns_readiness_off_first_ends_watches_and_finishes_in_bounded_time() {
    let app = spawn_app_with(|config| config.shutdown.predrain = Duration::from_millis(300)).await;
    let mut watch =
        app.health().watch(HealthCheckRequest { service: String::new() }).await.expect("watch readiness").into_inner();
    let first = watch.next().await.expect("first status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let started = Instant::now();
    app.shutdown.cancel();
    let next = watch.next().await.expect("a status change").expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32, "readiness goes NOT_SERVING first");
    // During the pre-drain delay the server still answers.
    let during = app.health().check(HealthCheckRequest { service: "liveness".into() }).await.expect("still answering");
    assert_eq!(during.into_inner().status, ServingStatus::NotServing as i32);

    // The Watch stream is ended by the server, so it cannot hold shutdown open.
    let end =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = watch.next().await {} }).await;
    assert!(end.is_ok(), "the watch stream was not closed");
    let stopped = tokio::time::timeout(Duration::from_secs(5), app.server).await;
    stopped.expect("server stopped within the bound").expect("task").expect("clean exit");
    let took = started.elapsed();
    println!("shutdown took {took:?} with a 300 ms pre-drain");
    assert!(took >= Duration::from_millis(300), "the pre-drain delay was honoured");
}

#[tokio::test]
async fn serving_as_a_role_that_escapes_row_level_security_never_reports_ready() {
    let control = spawn_app().await;
    assert_eq!(control.status("").await, ServingStatus::Serving, "control: as tenantd_app the server is ready");
    assert_eq!(control.status("postgres").await, ServingStatus::Serving);

    // The same database, but connecting as the superuser, which RLS does not bind.
    let mut config = test_config(&control.database);
    let admin = crate::helpers::pg_admin();
    config.database.url = SecretString::from(crate::helpers::database_url(&admin, &control.database));
    let unsafe_app = start(control.database.clone(), config).await;
    unsafe_app.wait_for_status("postgres", ServingStatus::Serving).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(unsafe_app.status("").await, ServingStatus::NotServing, "a superuser connection is never ready");
    assert_eq!(unsafe_app.status("tenantd.v1.UserService").await, ServingStatus::NotServing);
    unsafe_app.shutdown.cancel();
    let _ = unsafe_app.server.await;

    // Nor as an ordinary role that owns a table (an owner can turn its table's RLS off).
    let owner = format!("tenantd_test_owner_{}", uuid::Uuid::new_v4().simple());
    let superuser = crate::helpers::connect(&admin, &control.database).await;
    superuser.batch_execute(&format!("CREATE ROLE {owner} LOGIN; GRANT USAGE, CREATE ON SCHEMA public TO {owner}; GRANT SELECT ON __diesel_schema_migrations TO {owner}")).await.expect("role");
    superuser
        .batch_execute(&format!("SET ROLE {owner}; CREATE TABLE owned_by_the_server (id int); RESET ROLE"))
        .await
        .expect("owned table");
    let mut config = test_config(&control.database);
    config.database.url = SecretString::from(crate::helpers::database_url(&owner, &control.database));
    let owner_app = start(control.database.clone(), config).await;
    owner_app.wait_for_status("postgres", ServingStatus::Serving).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(owner_app.status("").await, ServingStatus::NotServing, "a table owner is never ready");
    owner_app.shutdown.cancel();
    let _ = owner_app.server.await;
    superuser
        .batch_execute(&format!("DROP TABLE owned_by_the_server; DROP OWNED BY {owner}; DROP ROLE {owner}"))
        .await
        .expect("clean up");
    control.stop().await;
}

#[tokio::test]
async fn reflection_serves_the_error_detail_types_so_clients_can_print_reasons() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let symbols = ["tenantd.v1.UserService", "google.rpc.ErrorInfo", "google.rpc.BadRequest"];
    let requests = symbols.map(|symbol| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.to_owned())),
    });
    let mut responses =
        client.server_reflection_info(tokio_stream::iter(requests)).await.expect("reflection").into_inner();
    for symbol in symbols {
        let response = responses.next().await.expect("a response").expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{symbol} is not served: {response:?}");
        };
        assert!(!files.file_descriptor_proto.is_empty(), "{symbol}: a file, with the ones it imports");
    }
    app.stop().await;
}
