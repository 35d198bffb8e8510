//! The Prometheus endpoint and per-tenant usage.

use std::time::Duration;

use tenantd::proto::{GetTenantUsageRequest, GetUserRequest, ListUsersRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app_with, unique_slug};

/// `GET /metrics` over a plain TCP connection.
pub async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("metrics port");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: tenantd\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{}", &response[..response.len().min(200)]);
    response
}

#[tokio::test]
async fn the_metrics_endpoint_shows_every_family_and_no_tenant_labels() {
    let app = spawn_app_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().expect("address"))).await;
    let port = app.metrics_port.expect("metrics are on");
    let tenant = app.create_tenant(&unique_slug("m")).await.id;
    let user = app.create_user(&tenant, "m@m.example").await.id;
    app.users(&tenant).get_user(GetUserRequest { id: user }).await.expect("ok");
    let _ = app.users(&tenant).get_user(GetUserRequest { id: uuid::Uuid::now_v7().to_string() }).await;

    let text = scrape(port).await;
    for expected in [
        r#"tenantd_rpc_requests_total{service="tenantd.v1.UserService",method="GetUser",code="OK"} 1"#,
        r#"tenantd_rpc_requests_total{service="tenantd.v1.UserService",method="GetUser",code="NotFound"} 1"#,
        r#"tenantd_rpc_requests_total{service="tenantd.v1.TenantService",method="CreateTenant",code="OK"} 1"#,
        r#"tenantd_rpc_duration_seconds_bucket{le="#,
        "tenantd_db_pool_max_connections 8",
        "tenantd_db_pool_connections ",
        "tenantd_db_pool_in_use_connections ",
        "tenantd_db_pool_acquire_wait_seconds_total ",
        "tenantd_db_pool_acquire_timeouts_total 0",
        "tenantd_resolution_cache_local_hits_total ",
        "tenantd_resolution_cache_redis_hits_total ",
        "tenantd_resolution_cache_misses_total ",
        "tenantd_redis_up 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(&tenant), "a tenant id leaked into a label");
    assert!(!text.contains("tenant_id="), "no metric is labelled by tenant");

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(b"GET /other HTTP/1.1\r\nHost: tenantd\r\nConnection: close\r\n\r\n").await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    assert!(response.starts_with("HTTP/1.1 404"));
    app.stop().await;
}

#[tokio::test]
async fn tenant_usage_counts_data_plane_requests_per_tenant_across_flushes() {
    let app = spawn_app_with(|_| {}).await;
    let busy = app.create_tenant(&unique_slug("busy")).await.id;
    let idle = app.create_tenant(&unique_slug("idle")).await.id;
    for _ in 0..5 {
        app.users(&busy).list_users(ListUsersRequest::default()).await.expect("list");
    }
    // Wait for at least one flush to Redis (every 200 ms in tests).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let usage = |tenant: String| {
        let mut tenants = app.tenants.clone();
        async move {
            tenants.get_tenant_usage(GetTenantUsageRequest { tenant_id: tenant }).await.expect("usage").into_inner()
        }
    };
    let busy_usage = usage(busy.clone()).await;
    assert_eq!(busy_usage.request_count, 5);
    assert!(busy_usage.last_active_time.is_some());
    let idle_usage = usage(idle.clone()).await;
    assert_eq!(idle_usage.request_count, 0, "control: counts are per tenant");
    assert!(idle_usage.last_active_time.is_none());
    let unknown = app
        .tenants
        .clone()
        .get_tenant_usage(GetTenantUsageRequest { tenant_id: uuid::Uuid::now_v7().to_string() })
        .await;
    crate::helpers::assert_error(unknown, tonic::Code::NotFound, "TENANT_NOT_FOUND");
    app.stop().await;
}

/// The value of an unlabelled counter in a scrape.
fn counter(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|line| line.starts_with(&format!("{name} "))).expect("the counter is exported");
    line[name.len() + 1..].trim().parse().expect("a count")
}

#[tokio::test]
async fn concurrent_requests_for_an_uncached_tenant_are_resolved_by_one_lookup_each() {
    let app = spawn_app_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().expect("address"))).await;
    let port = app.metrics_port.expect("metrics are on");
    let slug = unique_slug("herd");
    app.create_tenant(&slug).await;
    let users = tenantd::proto::user_service_client::UserServiceClient::with_interceptor(
        app.channel.clone(),
        crate::helpers::Metadata::platform().tenant_slug(&slug),
    );
    let before = counter(&scrape(port).await, "tenantd_resolution_cache_misses_total");
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let mut users = users.clone();
            tokio::spawn(async move { users.list_users(ListUsersRequest::default()).await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("served");
    }
    let misses = counter(&scrape(port).await, "tenantd_resolution_cache_misses_total") - before;
    // One lookup of the slug and at most one of the tenant's state, however many requests
    // missed them at once (without coalescing, each concurrent request would query).
    assert!((1..=2).contains(&misses), "200 concurrent requests made {misses} lookups");
    app.stop().await;
}
