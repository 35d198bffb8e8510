//! Tenant API keys: lifecycle, propagation of revocation across replicas, and abuse.

use std::time::{Duration, Instant};

use tenantd::auth::api_key::ApiKeyToken;
use tenantd::proto::{
    CreateUserRequest, GetTenantRequest, ListApiKeysRequest, ListUsersRequest, RevokeApiKeyRequest, User,
};
use tonic::Code;

use crate::helpers::{ApiKeyScope, Metadata, assert_error, spawn_app, start, test_config, unique_slug};

fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest { user: Some(User { email: email.into(), ..Default::default() }), ..Default::default() }
}

#[tokio::test]
async fn a_key_is_created_used_listed_without_its_secret_and_revoked() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("k")).await.id;
    let (key_id, secret) = app.create_api_key(&tenant, &[ApiKeyScope::Read, ApiKeyScope::Write]).await;
    assert!(secret.starts_with("tdk_"));

    // The key names its tenant: no tenant metadata needed.
    let mut with_key = app.users_with_key(&secret);
    let created = with_key.create_user(new_user("k@k.example")).await.expect("write with the key").into_inner();
    let listed = with_key.list_users(ListUsersRequest::default()).await.expect("read with the key").into_inner();
    assert_eq!(listed.users, vec![created.clone()]);
    // The platform sees the same user in that tenant.
    let platform_view = app.users(&tenant).list_users(ListUsersRequest::default()).await.expect("list").into_inner();
    assert_eq!(platform_view.users, vec![created]);

    // Listing shows the key, with no secret anywhere, and (after the batched flush) its last use.
    let started = Instant::now();
    let key = loop {
        let keys = app
            .tenants
            .clone()
            .list_api_keys(ListApiKeysRequest { tenant_id: tenant.clone(), ..Default::default() })
            .await
            .expect("list keys")
            .into_inner()
            .api_keys;
        assert_eq!(keys.len(), 1);
        if keys[0].last_used_time.is_some() || started.elapsed() > Duration::from_secs(5) {
            break keys[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(key.id, key_id);
    assert!(key.last_used_time.is_some(), "last_used_time is recorded in batches");
    assert!(!format!("{key:?}").contains(&secret[4..20]), "no part of the secret is listed");

    // Revoke: the next call is UNAUTHENTICATED.
    let revoked = app
        .tenants
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { tenant_id: tenant.clone(), id: key_id.clone() })
        .await
        .expect("revoke")
        .into_inner();
    assert!(revoked.revoke_time.is_some());
    assert_error(with_key.list_users(ListUsersRequest::default()).await, Code::Unauthenticated, "API_KEY_REVOKED");
    app.stop().await;
}

#[tokio::test]
async fn revocation_through_one_replica_reaches_another_within_a_second() {
    let first = spawn_app().await;
    let second = start(first.database.clone(), test_config(&first.database)).await;
    second.wait_for_status("", tonic_health::pb::health_check_response::ServingStatus::Serving).await;
    second.wait_for_status("redis", tonic_health::pb::health_check_response::ServingStatus::Serving).await;

    let tenant = first.create_tenant(&unique_slug("r")).await.id;
    let (key_id, secret) = first.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let mut through_second = second.users_with_key(&secret);
    // Positive control, and it warms the second replica's caches.
    for _ in 0..5 {
        through_second.list_users(ListUsersRequest::default()).await.expect("the key works on the second replica");
    }

    let revoked_at = Instant::now();
    first
        .tenants
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { tenant_id: tenant.clone(), id: key_id })
        .await
        .expect("revoke through the first replica");
    let propagation = loop {
        match through_second.list_users(ListUsersRequest::default()).await {
            Err(status) if status.code() == Code::Unauthenticated => break revoked_at.elapsed(),
            Ok(_) => {}
            Err(status) => panic!("unexpected status {status:?}"),
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "revocation did not reach the second replica within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("revocation propagated to the second replica in {propagation:?}");
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}

#[tokio::test]
async fn abusive_keys_get_exact_codes_and_a_bad_checksum_costs_no_database_query() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("a")).await.id;
    let other = app.create_tenant(&unique_slug("b")).await.id;
    let (_, read_write) = app.create_api_key(&tenant, &[ApiKeyScope::Read, ApiKeyScope::Write]).await;
    let (_, read_only) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let list = ListUsersRequest::default;

    // Positive control.
    app.users_with_key(&read_write).list_users(list()).await.expect("a valid key works");

    // Bad checksum: one character of the secret changed. Rejected before any I/O.
    let mut tampered = read_write.clone().into_bytes();
    tampered[60] = if tampered[60] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let checkouts = app.pool_checkouts();
    assert_error(
        app.users_with_key(&tampered).list_users(list()).await,
        Code::Unauthenticated,
        "API_KEY_CHECKSUM_MISMATCH",
    );
    assert_eq!(app.pool_checkouts(), checkouts, "a bad checksum made a database query");

    // Wrong prefix: not a key, and not the platform token either.
    let wrong_prefix = read_write.replacen("tdk_", "tdx_", 1);
    assert_error(
        app.users_with_key(&wrong_prefix).list_users(list()).await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );

    // Well-formed, right tenant, but a secret (or a key id) nobody issued.
    let parsed = ApiKeyToken::parse(&read_write).expect("valid key");
    let forged_secret = ApiKeyToken::generate(parsed.tenant_id(), parsed.key_id()).expect("key").encode();
    assert_error(app.users_with_key(&forged_secret).list_users(list()).await, Code::Unauthenticated, "API_KEY_INVALID");
    let unknown_id = ApiKeyToken::generate(parsed.tenant_id(), uuid::Uuid::now_v7()).expect("key").encode();
    assert_error(app.users_with_key(&unknown_id).list_users(list()).await, Code::Unauthenticated, "API_KEY_INVALID");

    // A read-only key reads (and pings) but cannot write.
    app.users_with_key(&read_only).list_users(list()).await.expect("read-only key reads");
    let ping = tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::bearer(&read_only),
    )
    .ping(tenantd::proto::PingRequest {})
    .await
    .expect("ping with a read-only key");
    assert_eq!(ping.into_inner().tenant_id, tenant);
    let write = app.users_with_key(&read_only).create_user(new_user("ro@a.example")).await;
    assert_error(write, Code::PermissionDenied, "API_KEY_SCOPE_INSUFFICIENT");

    // x-tenant-id must agree with the key.
    let matching = Metadata::bearer(&read_write).tenant_id(&tenant);
    app.users_with(matching).list_users(list()).await.expect("matching x-tenant-id is fine");
    let mismatched = Metadata::bearer(&read_write).tenant_id(&other);
    assert_error(app.users_with(mismatched).list_users(list()).await, Code::PermissionDenied, "TENANT_MISMATCH");

    // The control plane refuses tenant keys.
    let control = tenantd::proto::tenant_service_client::TenantServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::bearer(&read_write),
    )
    .get_tenant(GetTenantRequest { selector: Some(tenantd::proto::get_tenant_request::Selector::Id(tenant.clone())) })
    .await;
    assert_error(control, Code::PermissionDenied, "API_KEY_NOT_ALLOWED");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("x")).await.id;
    let expiry = std::time::SystemTime::now() + Duration::from_millis(1500);
    let response = app
        .tenants
        .clone()
        .create_api_key(tenantd::proto::CreateApiKeyRequest {
            tenant_id: tenant.clone(),
            api_key: Some(tenantd::proto::ApiKey {
                display_name: "short-lived".into(),
                scopes: vec![ApiKeyScope::Read as i32],
                expire_time: Some(prost_types::Timestamp::from(expiry)),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create")
        .into_inner();
    let mut client = app.users_with_key(&response.secret);
    client.list_users(ListUsersRequest::default()).await.expect("works before expiry");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_error(client.list_users(ListUsersRequest::default()).await, Code::Unauthenticated, "API_KEY_EXPIRED");

    let past = app
        .tenants
        .clone()
        .create_api_key(tenantd::proto::CreateApiKeyRequest {
            tenant_id: tenant,
            api_key: Some(tenantd::proto::ApiKey {
                display_name: "already expired".into(),
                scopes: vec![ApiKeyScope::Read as i32],
                expire_time: Some(prost_types::Timestamp::from(std::time::SystemTime::now() - Duration::from_secs(60))),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    assert_error(past, Code::InvalidArgument, "EXPIRE_TIME_INVALID");
    app.stop().await;
}
