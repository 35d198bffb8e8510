//! Graceful shutdown of the real binary on SIGTERM, under load, with a health Watch open.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenantd::proto::{CreateUserRequest, User};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{
    KillOnDrop, Metadata, PLATFORM_TOKEN, connect, create_database, database_url, drop_database, migrate, pg_admin,
    redis_url,
};
use crate::throwaway::free_port;

const PREDRAIN: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_drains_in_flight_rpcs_exactly_once_and_exits_zero_in_time() {
    let database = create_database().await;
    migrate(&database).await;
    let port = free_port();
    let server = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .arg("serve")
        .env("TENANTD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("TENANTD_DATABASE_URL", database_url("tenantd_app", &database))
        .env("TENANTD_REDIS_URL", redis_url())
        .env("TENANTD_PLATFORM_TOKEN", PLATFORM_TOKEN)
        .env("TENANTD_HEALTH_INTERVAL_MS", "100")
        .env("TENANTD_SHUTDOWN_PREDRAIN_MS", PREDRAIN.as_millis().to_string())
        .env("TENANTD_SHUTDOWN_GRACE_MS", GRACE.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tenantd");
    let server = KillOnDrop(Some(server));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    let started = Instant::now();
    loop {
        let status = health.check(HealthCheckRequest { service: String::new() }).await;
        if status.is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "tenantd never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tenants = tenantd::proto::tenant_service_client::TenantServiceClient::with_interceptor(
        channel.clone(),
        Metadata::platform(),
    );
    let tenant = tenants
        .create_tenant(tenantd::proto::CreateTenantRequest {
            tenant: Some(tenantd::proto::Tenant {
                slug: "drain".into(),
                display_name: "Drain".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("tenant")
        .into_inner()
        .id;
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.expect("watch").into_inner();
    assert_eq!(watch.next().await.expect("first").expect("ok").status, ServingStatus::Serving as i32);

    // Load: creates on their own connections, each with a request id.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcomes = Arc::new(Mutex::new(Vec::<Code>::new()));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
        let mut users = tenantd::proto::user_service_client::UserServiceClient::with_interceptor(
            channel,
            Metadata::platform().tenant_id(&tenant),
        );
        let acknowledged = acknowledged.clone();
        let outcomes = outcomes.clone();
        workers.push(tokio::spawn(async move {
            for sequence in 0.. {
                let email = format!("w{worker}-{sequence}@drain.example");
                let request = CreateUserRequest {
                    user: Some(User { email: email.clone(), ..Default::default() }),
                    request_id: uuid::Uuid::new_v4().to_string(),
                };
                let outcome = users.create_user(request).await;
                let code = outcome.as_ref().map_or_else(connection_level, |_| Code::Ok);
                outcomes.lock().expect("lock").push(code);
                if outcome.is_ok() {
                    acknowledged.lock().expect("lock").push(email);
                } else if matches!(code, Code::Unavailable | Code::Cancelled) {
                    // The server has stopped accepting work (a request racing the
                    // connection's close is refused before it reaches the server).
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    let pid = server.id();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(kill.success());

    let next = watch.next().await.expect("a change").expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32, "readiness goes NOT_SERVING first");
    let not_serving_after = signalled.elapsed();
    let ended = tokio::time::timeout(GRACE, async { while let Some(Ok(_)) = watch.next().await {} }).await;
    assert!(ended.is_ok(), "the open Watch stream was closed by the server");

    let status =
        server.wait_for(PREDRAIN + GRACE + Duration::from_secs(2)).await.expect("tenantd exited within the bound");
    let exited_after = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(exited_after >= PREDRAIN, "the pre-drain delay was honoured ({exited_after:?})");
    for worker in workers {
        worker.await.expect("worker");
    }

    // New RPCs are refused once the server stopped accepting.
    let refused = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await;
    assert_eq!(refused.expect_err("refused").code(), Code::Unavailable);

    let outcomes = outcomes.lock().expect("lock").clone();
    assert!(outcomes.iter().all(|code| matches!(code, Code::Ok | Code::Unavailable | Code::Cancelled)), "{outcomes:?}");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let admin = connect(&pg_admin(), &database).await;
    let stored: Vec<String> =
        admin.query("SELECT email FROM users", &[]).await.expect("users").iter().map(|row| row.get(0)).collect();
    let mut sorted_acknowledged = acknowledged.clone();
    sorted_acknowledged.sort();
    let mut sorted_stored = stored.clone();
    sorted_stored.sort();
    assert_eq!(sorted_stored, sorted_acknowledged, "every acknowledged create exists exactly once, and nothing else");
    println!(
        "shutdown: NOT_SERVING {not_serving_after:?} after SIGTERM, exit 0 after {exited_after:?} \
         (pre-drain {PREDRAIN:?}); {} creates acknowledged and stored exactly once",
        acknowledged.len()
    );
    drop(admin);
    drop_database(&database).await;
}

/// The code of a refused call, with a stream that HTTP/2 reset as the connection closed
/// (`h2 protocol error`, no google.rpc.ErrorInfo: tonic reports it as INTERNAL) counted as
/// CANCELLED: the call never reached an answer from tenantd. Whether its write committed is
/// what the exactly-once check below decides. A server answer with INTERNAL (tenantd's
/// errors always carry ErrorInfo) stays INTERNAL and fails the test.
fn connection_level(status: &tonic::Status) -> Code {
    use tonic_types::StatusExt;
    let reset = status.code() == Code::Internal
        && status.get_details_error_info().is_none()
        && status.message().contains("h2 protocol error");
    if reset { Code::Cancelled } else { status.code() }
}
