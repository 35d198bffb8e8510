//! The tenant layer validates metadata before any I/O and answers precisely.

use tenantd::proto::{GetTenantRequest, ListUsersRequest};
use tonic::Code;
use tonic::metadata::MetadataMap;

use crate::helpers::{Metadata, PLATFORM_TOKEN, assert_error, spawn_app, unique_slug};

#[tokio::test]
async fn missing_malformed_duplicated_or_unauthenticated_metadata_gets_precise_codes() {
    let app = spawn_app().await;
    let slug = unique_slug("m");
    let tenant = app.create_tenant(&slug).await.id;
    let list = ListUsersRequest::default;

    // Positive controls: by id and by slug.
    app.users_with(Metadata::platform().tenant_id(&tenant)).list_users(list()).await.expect("by id");
    app.users_with(Metadata::platform().tenant_slug(&slug)).list_users(list()).await.expect("by slug");

    let cases: Vec<(Metadata, Code, &str)> = vec![
        (Metadata::platform(), Code::InvalidArgument, "TENANT_REQUIRED"),
        (Metadata::platform().tenant_id("not-a-uuid"), Code::InvalidArgument, "TENANT_ID_MALFORMED"),
        (Metadata::platform().tenant_id(&tenant.replace('-', "")), Code::InvalidArgument, "TENANT_ID_MALFORMED"),
        (
            Metadata::platform().tenant_id(&tenant).tenant_id(&tenant),
            Code::InvalidArgument,
            "TENANT_SELECTOR_AMBIGUOUS",
        ),
        (
            Metadata::platform().tenant_id(&tenant).tenant_slug(&slug),
            Code::InvalidArgument,
            "TENANT_SELECTOR_AMBIGUOUS",
        ),
        (Metadata::platform().tenant_slug("NOPE!"), Code::InvalidArgument, "TENANT_SLUG_MALFORMED"),
        (Metadata::platform().tenant_id(&uuid::Uuid::now_v7().to_string()), Code::NotFound, "TENANT_NOT_FOUND"),
        (Metadata::platform().tenant_slug("no-such-tenant"), Code::NotFound, "TENANT_NOT_FOUND"),
        (Metadata::none().tenant_id(&tenant), Code::Unauthenticated, "CREDENTIALS_MISSING"),
        (
            Metadata::none().with("authorization", "Bearer wrong").tenant_id(&tenant),
            Code::Unauthenticated,
            "CREDENTIALS_INVALID",
        ),
        (
            Metadata::none().with("authorization", PLATFORM_TOKEN).tenant_id(&tenant),
            Code::Unauthenticated,
            "CREDENTIALS_MALFORMED",
        ),
    ];
    for (metadata, code, reason) in cases {
        assert_error(app.users_with(metadata).list_users(list()).await, code, reason);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_non_ascii_tenant_header_is_invalid_argument() {
    let app = spawn_app().await;
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {PLATFORM_TOKEN}").parse().expect("header"));
    headers.insert(
        "x-tenant-id",
        http::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is a legal header value"),
    );
    let mut request = tonic::Request::new(ListUsersRequest::default());
    *request.metadata_mut() = MetadataMap::from_headers(headers);
    let result = app.users_with(Metadata::none()).list_users(request).await;
    assert_error(result, Code::InvalidArgument, "TENANT_ID_MALFORMED");
    app.stop().await;
}

#[tokio::test]
async fn the_control_plane_requires_the_platform_token() {
    let app = spawn_app().await;
    let request =
        || GetTenantRequest { selector: Some(tenantd::proto::get_tenant_request::Selector::Slug("whatever".into())) };
    let anonymous = tenantd::proto::tenant_service_client::TenantServiceClient::new(app.channel.clone())
        .get_tenant(request())
        .await;
    assert_error(anonymous, Code::Unauthenticated, "CREDENTIALS_MISSING");
    let wrong = tenantd::proto::tenant_service_client::TenantServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::none().with("authorization", "Bearer nope"),
    )
    .get_tenant(request())
    .await;
    assert_error(wrong, Code::Unauthenticated, "CREDENTIALS_INVALID");
    // Positive control: with the token, the same call reaches the registry.
    assert_error(app.tenants.clone().get_tenant(request()).await, Code::NotFound, "TENANT_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn missing_malformed_and_unknown_credentials_each_say_which_without_revealing_the_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("creds")).await.id;
    let list = ListUsersRequest::default;
    app.users_with(Metadata::platform().tenant_id(&tenant)).list_users(list()).await.expect("control: the token works");
    let message = |metadata: Metadata| {
        let mut users = app.users_with(metadata.tenant_id(&tenant));
        async move { users.list_users(list()).await.expect_err("refused").message().to_owned() }
    };
    let missing = message(Metadata::none()).await;
    let malformed = message(Metadata::none().with("authorization", "Token abc")).await;
    let unknown = message(Metadata::bearer("not-the-token")).await;
    assert!(missing.contains("no credentials"), "{missing}");
    assert!(malformed.contains("not `Bearer"), "{malformed}");
    assert!(unknown.contains("not a valid credential"), "{unknown}");
    for text in [&missing, &malformed, &unknown] {
        assert!(!text.contains(PLATFORM_TOKEN) && !text.contains("not-the-token"), "no token in {text}");
    }
    app.stop().await;
}
