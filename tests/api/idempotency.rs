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
async fn an_empty_request_id_means_no_key_and_a_blank_one_is_malformed() {
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("e")).await.id;
    // Positive control: a request_id leaves a record.
    let keyed = uuid::Uuid::new_v4().to_string();
    app.users(&tenant).create_user(create_user("keyed@e.example", &keyed)).await.expect("keyed");
    assert_eq!(count(&app.database, "SELECT count(*) FROM idempotency_records").await, 1);

    // Empty (what a client that never sets the field sends): no record, so a retry is a
    // second create, answered as a duplicate email rather than replayed.
    app.users(&tenant).create_user(create_user("plain@e.example", "")).await.expect("no key");
    let again = app.users(&tenant).create_user(create_user("plain@e.example", "")).await;
    assert_error(again, Code::AlreadyExists, "USER_EMAIL_ALREADY_EXISTS");
    assert_eq!(count(&app.database, "SELECT count(*) FROM idempotency_records").await, 1);
    assert_eq!(count(&app.database, "SELECT count(*) FROM users").await, 2);

    // Whitespace is not empty: it is a malformed key, with a field violation.
    let blank = app.users(&tenant).create_user(create_user("blank@e.example", " ")).await;
    let status = blank.as_ref().expect_err("a blank request_id is refused").clone();
    assert_error(blank, Code::InvalidArgument, "REQUEST_ID_MALFORMED");
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["request_id"]);
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
