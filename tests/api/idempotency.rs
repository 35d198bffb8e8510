//! Exactly-once creates (AIP-155), with the record in PostgreSQL.

use tenantd::proto::{CreateApiKeyRequest, CreateTenantRequest, CreateUserRequest, Tenant, User};
use tonic::Code;

use crate::helpers::{ApiKeyScope, assert_error, connect, pg_admin, redis_url, spawn_app, unique_slug};

fn create_user(email: &str, request_id: &str) -> CreateUserRequest {
    CreateUserRequest { user: Some(User { email: email.into(), ..Default::default() }), request_id: request_id.into() }
}

async fn count(database: &str, sql: &str) -> i64 {
    connect(&pg_admin(), database).await.query_one(sql, &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn a_sequential_retry_returns_the_first_response_and_creates_nothing_more() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("i")).await.id;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first =
        app.users(&tenant).create_user(create_user("once@i.example", &request_id)).await.expect("first").into_inner();
    let retry =
        app.users(&tenant).create_user(create_user("once@i.example", &request_id)).await.expect("retry").into_inner();
    assert_eq!(retry, first);
    assert_eq!(count(&app.database, "SELECT count(*) FROM users").await, 1);
    assert_eq!(count(&app.database, "SELECT count(*) FROM audit_events WHERE action = 'user.create'").await, 1);

    // A different body under the same request_id is refused.
    let reused = app.users(&tenant).create_user(create_user("other@i.example", &request_id)).await;
    assert_error(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
    let malformed = app.users(&tenant).create_user(create_user("x@i.example", "not-a-uuid")).await;
    assert_error(malformed, Code::InvalidArgument, "REQUEST_ID_MALFORMED");
    app.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_retries_create_one_row() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("c")).await.id;
    let request_id = uuid::Uuid::new_v4().to_string();
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let mut client = app.users(&tenant);
            let request = create_user("race@c.example", &request_id);
            tokio::spawn(async move { client.create_user(request).await.map(tonic::Response::into_inner) })
        })
        .collect();
    let mut responses = Vec::new();
    for attempt in attempts {
        responses.push(attempt.await.expect("task").expect("every attempt succeeds"));
    }
    assert!(responses.iter().all(|response| *response == responses[0]), "all attempts see the same response");
    assert_eq!(count(&app.database, "SELECT count(*) FROM users").await, 1);
    assert_eq!(count(&app.database, "SELECT count(*) FROM audit_events WHERE action = 'user.create'").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_redis_was_flushed_still_creates_one_row() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("f")).await.id;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first =
        app.users(&tenant).create_user(create_user("f@f.example", &request_id)).await.expect("first").into_inner();
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("redis");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut connection).await.expect("flush");
    let retry =
        app.users(&tenant).create_user(create_user("f@f.example", &request_id)).await.expect("retry").into_inner();
    assert_eq!(retry, first);
    assert_eq!(count(&app.database, "SELECT count(*) FROM users").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_same_request_id_in_two_tenants_creates_two_independent_rows() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let request_id = uuid::Uuid::new_v4().to_string();
    let in_a =
        app.users(&tenant_a).create_user(create_user("same@x.example", &request_id)).await.expect("a").into_inner();
    let in_b =
        app.users(&tenant_b).create_user(create_user("same@x.example", &request_id)).await.expect("b").into_inner();
    assert_ne!(in_a.id, in_b.id);
    assert_eq!(count(&app.database, "SELECT count(*) FROM users").await, 2);
    // And a different body in B is fine too: the record is B's own.
    app.users(&tenant_b)
        .create_user(create_user("other@x.example", &uuid::Uuid::new_v4().to_string()))
        .await
        .expect("b2");
    app.stop().await;
}

#[tokio::test]
async fn tenant_and_key_creates_are_idempotent_too_and_a_replayed_key_carries_no_secret() {
    let app = spawn_app().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let slug = unique_slug("t");
    let create = || CreateTenantRequest {
        tenant: Some(Tenant { slug: slug.clone(), display_name: "T".into(), ..Default::default() }),
        request_id: request_id.clone(),
    };
    let first = app.tenants.clone().create_tenant(create()).await.expect("first").into_inner();
    let retry = app.tenants.clone().create_tenant(create()).await.expect("retry").into_inner();
    assert_eq!(retry, first);
    assert_eq!(count(&app.database, "SELECT count(*) FROM tenants").await, 1);

    let key_request = || CreateApiKeyRequest {
        tenant_id: first.id.clone(),
        api_key: Some(tenantd::proto::ApiKey {
            display_name: "k".into(),
            scopes: vec![ApiKeyScope::Read as i32],
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let key = app.tenants.clone().create_api_key(key_request()).await.expect("key").into_inner();
    let replay = app.tenants.clone().create_api_key(key_request()).await.expect("replay").into_inner();
    assert!(!key.secret.is_empty());
    assert_eq!(replay.api_key, key.api_key);
    assert!(replay.secret.is_empty(), "the secret is shown exactly once");
    assert_eq!(count(&app.database, "SELECT count(*) FROM api_keys").await, 1);
    app.stop().await;
}
