//! Hostile input over gRPC: every case gets a specific code (never INTERNAL), the server
//! stays SERVING, and its memory stays bounded.

use std::time::Duration;

use prost_types::FieldMask;
use tenantd::proto::{
    CreateDocumentRequest, CreateTenantRequest, CreateUserRequest, DeleteDocumentRequest, DeleteUserRequest, Document,
    GetDocumentRequest, GetUserRequest, ListDocumentsRequest, ListUsersRequest, PingRequest, Tenant,
    UpdateDocumentRequest, UpdateUserRequest, User,
};
use tokio::io::AsyncWriteExt;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Metadata, PLATFORM_TOKEN, TestApp, assert_error, connect, pg_admin, spawn_app, unique_slug};

/// Resident memory of this process (the server runs in it), in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1).and_then(|value| value.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sends ListUsers with raw metadata and returns the status code and reason.
async fn list_with(app: &TestApp, headers: http::HeaderMap) -> (Code, String) {
    let mut request = tonic::Request::new(ListUsersRequest::default());
    *request.metadata_mut() = MetadataMap::from_headers(headers);
    match app.users_with(Metadata::none()).list_users(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), crate::helpers::reason(&status)),
    }
}

#[tokio::test]
async fn hostile_metadata_values_get_precise_codes() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("m")).await.id;
    let nasty: Vec<Vec<u8>> = vec![
        b"\"quoted\"".to_vec(),
        b"100%".to_vec(),
        b"*".to_vec(),
        b"a:b:c".to_vec(),
        b"' OR '1'='1".to_vec(),
        "caf\u{e9}".as_bytes().to_vec(),
        vec![b'a'; 16 * 1024],
    ];
    for value in &nasty {
        let header = http::HeaderValue::from_bytes(value).expect("a legal header value");
        for (name, expected) in [
            ("x-tenant-id", (Code::InvalidArgument, "TENANT_ID_MALFORMED")),
            ("x-tenant-slug", (Code::InvalidArgument, "TENANT_SLUG_MALFORMED")),
            ("x-request-id", (Code::InvalidArgument, "REQUEST_ID_MALFORMED")),
        ] {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer {PLATFORM_TOKEN}").parse().expect("header"));
            if name == "x-request-id" {
                headers.insert("x-tenant-id", tenant.parse().expect("header"));
            }
            headers.insert(name, header.clone());
            let (code, reason) = list_with(&app, headers).await;
            // A request id may contain `:`; anything else here is malformed.
            let valid_request_id = name == "x-request-id"
                && value.len() <= 128
                && value.iter().all(|byte| byte.is_ascii_alphanumeric() || b"._:-".contains(byte));
            let expected = if valid_request_id { (Code::Ok, "") } else { expected };
            assert_eq!(
                (code, reason.as_str()),
                expected,
                "{name}: {:?}",
                String::from_utf8_lossy(&value[..value.len().min(20)])
            );
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", header.clone());
        headers.insert("x-tenant-id", tenant.parse().expect("header"));
        let (code, _) = list_with(&app, headers).await;
        assert_eq!(code, Code::Unauthenticated);
    }
    // An API key whose text has multibyte characters (found by fuzzing: it used to panic).
    let mut headers = http::HeaderMap::new();
    let key = format!("Bearer tdk_{}\u{1e5}{}", "0".repeat(39), "0".repeat(31));
    headers.insert("authorization", http::HeaderValue::from_bytes(key.as_bytes()).expect("obs-text is legal"));
    assert_eq!(list_with(&app, headers).await, (Code::Unauthenticated, "API_KEY_MALFORMED".to_owned()));
    // Past the header list limit (64 KiB by default) the transport refuses the request
    // before tenantd sees it; the server carries on.
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {PLATFORM_TOKEN}").parse().expect("header"));
    headers.insert("x-tenant-id", http::HeaderValue::from_bytes(&vec![b'a'; 80 * 1024]).expect("header"));
    let (code, _) = list_with(&app, headers).await;
    assert_ne!(code, Code::Ok);
    assert_ne!(code, Code::Internal);
    // NUL cannot be sent at all: HTTP forbids it in header values, so clients refuse it.
    assert!(http::HeaderValue::from_bytes(b"a\0b").is_err());
    assert_eq!(app.status("").await, ServingStatus::Serving);
    app.stop().await;
}

#[tokio::test]
async fn sql_looking_strings_are_data_never_code() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("sql")).await.id;
    let injection = "x'); DROP TABLE users; --";
    let display = format!("Robert {injection}");
    // Fields that accept free text store it literally.
    let created = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("bobby"),
                display_name: display.clone(),
                labels: [("note".to_owned(), injection.to_owned())].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("free text is accepted")
        .into_inner();
    assert_eq!(created.display_name, display);
    assert_eq!(created.labels.get("note").map(String::as_str), Some(injection));
    let email = "o'neil+1=1--@sql.example";
    let user = app
        .users(&tenant)
        .create_user(CreateUserRequest {
            user: Some(User { email: email.into(), display_name: display.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("user")
        .into_inner();
    assert_eq!((user.email.as_str(), user.display_name.as_str()), (email, display.as_str()));
    let document = app
        .documents(&tenant)
        .create_document(CreateDocumentRequest {
            document: Some(Document { title: display.clone(), owner_user_id: user.id.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("document")
        .into_inner();
    assert_eq!(document.title, display);

    // Structured fields reject it with a field violation.
    let slug = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant { slug: injection.into(), display_name: "x".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(slug, Code::InvalidArgument, "TENANT_SLUG_MALFORMED");
    let domain = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("d"),
                display_name: "x".into(),
                domains: vec![injection.into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_error(domain, Code::InvalidArgument, "DOMAINS_INVALID");
    let mut users = app.users(&tenant);
    assert_error(users.get_user(GetUserRequest { id: injection.into() }).await, Code::InvalidArgument, "ID_MALFORMED");
    let token = users.list_users(ListUsersRequest { page_size: 1, page_token: injection.into() }).await;
    assert_error(token, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    let request_id = users
        .create_user(CreateUserRequest {
            user: Some(User { email: "r@sql.example".into(), ..Default::default() }),
            request_id: injection.into(),
        })
        .await;
    assert_error(request_id, Code::InvalidArgument, "REQUEST_ID_MALFORMED");

    // Nothing was dropped.
    let tables: i64 = connect(&pg_admin(), &app.database)
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'users'", &[])
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(tables, 1);
    app.stop().await;
}

#[tokio::test]
async fn page_tokens_and_sizes_are_validated() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    for index in 0..3 {
        app.create_user(&tenant_a, &format!("u{index}@a.example")).await;
    }
    let mut users = app.users(&tenant_a);
    let first =
        users.list_users(ListUsersRequest { page_size: 1, ..Default::default() }).await.expect("page").into_inner();
    let token = first.next_page_token;
    // Positive control.
    users.list_users(ListUsersRequest { page_size: 1, page_token: token.clone() }).await.expect("valid token");

    let mut tampered = token.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let cases = [
        String::from_utf8(tampered).expect("ascii"),
        token[..token.len() - 3].to_owned(),
        format!("{token}AAAA"),
        "x".repeat(100_000),
    ];
    for case in cases {
        let result = users.list_users(ListUsersRequest { page_size: 1, page_token: case }).await;
        assert_error(result, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    }
    let cross = app.users(&tenant_b).list_users(ListUsersRequest { page_size: 1, page_token: token }).await;
    assert_error(cross, Code::InvalidArgument, "PAGE_TOKEN_INVALID");

    assert_error(
        users.list_users(ListUsersRequest { page_size: -1, ..Default::default() }).await,
        Code::InvalidArgument,
        "PAGE_SIZE_INVALID",
    );
    let zero =
        users.list_users(ListUsersRequest { page_size: 0, ..Default::default() }).await.expect("zero means default");
    assert_eq!(zero.into_inner().users.len(), 3);
    let huge = users.list_users(ListUsersRequest { page_size: i32::MAX, ..Default::default() }).await.expect("clamped");
    assert_eq!(huge.into_inner().users.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn every_data_plane_rpc_with_another_tenants_ids_is_not_found() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let bob = app.create_user(&tenant_b, "bob@b.example").await;
    let memo = app
        .documents(&tenant_b)
        .create_document(CreateDocumentRequest {
            document: Some(Document { title: "memo".into(), owner_user_id: bob.id.clone(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("memo")
        .into_inner();
    let mut users = app.users(&tenant_a);
    let mut documents = app.documents(&tenant_a);
    let mask = |path: &str| Some(FieldMask { paths: vec![path.into()] });
    assert_error(users.get_user(GetUserRequest { id: bob.id.clone() }).await, Code::NotFound, "USER_NOT_FOUND");
    let update = UpdateUserRequest {
        user: Some(User { id: bob.id.clone(), display_name: "x".into(), ..Default::default() }),
        update_mask: mask("display_name"),
    };
    assert_error(users.update_user(update).await, Code::NotFound, "USER_NOT_FOUND");
    assert_error(
        users.delete_user(DeleteUserRequest { id: bob.id.clone(), etag: String::new() }).await,
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_error(
        documents.get_document(GetDocumentRequest { id: memo.id.clone() }).await,
        Code::NotFound,
        "DOCUMENT_NOT_FOUND",
    );
    let update = UpdateDocumentRequest {
        document: Some(Document { id: memo.id.clone(), title: "x".into(), ..Default::default() }),
        update_mask: mask("title"),
    };
    assert_error(documents.update_document(update).await, Code::NotFound, "DOCUMENT_NOT_FOUND");
    assert_error(
        documents.delete_document(DeleteDocumentRequest { id: memo.id.clone(), etag: String::new() }).await,
        Code::NotFound,
        "DOCUMENT_NOT_FOUND",
    );
    let listed = documents
        .list_documents(ListDocumentsRequest { owner_user_id: bob.id.clone(), ..Default::default() })
        .await
        .expect("list");
    assert!(listed.into_inner().documents.is_empty(), "filtering by a foreign owner shows nothing");
    let create = CreateDocumentRequest {
        document: Some(Document { title: "t".into(), owner_user_id: bob.id.clone(), ..Default::default() }),
        ..Default::default()
    };
    assert_error(documents.create_document(create).await, Code::InvalidArgument, "OWNER_NOT_FOUND");
    // Positive control: B still has both, unchanged.
    assert_eq!(
        app.users(&tenant_b).get_user(GetUserRequest { id: bob.id.clone() }).await.expect("bob").into_inner(),
        bob
    );
    assert_eq!(
        app.documents(&tenant_b)
            .get_document(GetDocumentRequest { id: memo.id.clone() })
            .await
            .expect("memo")
            .into_inner(),
        memo
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("big")).await.id;
    let owner = app.create_user(&tenant, "o@big.example").await.id;
    let request = CreateDocumentRequest {
        document: Some(Document {
            title: "huge".into(),
            owner_user_id: owner,
            content: vec![0; 5 * 1024 * 1024],
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = app.documents(&tenant).create_document(request).await.expect_err("too large");
    assert!(matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange), "{status:?}");
    assert_eq!(app.status("").await, ServingStatus::Serving);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_streams_on_one_connection_are_served_within_bounded_memory() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("streams")).await.id;
    let ping = tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::platform().tenant_id(&tenant),
    );
    ping.clone().ping(PingRequest {}).await.expect("control: one ping");
    let before = resident_kib();
    let calls: Vec<_> = (0..10_000)
        .map(|_| {
            let mut client = ping.clone();
            tokio::spawn(async move { client.ping(PingRequest {}).await.map(|_| ()).map_err(|status| status.code()) })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for call in calls {
        let code = match call.await.expect("task") {
            Ok(()) => Code::Ok,
            Err(code) => code,
        };
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    let after = resident_kib();
    println!("10,000 concurrent pings on one connection: {codes:?}; RSS {before} KiB -> {after} KiB");
    assert!(!codes.contains_key("Internal"), "{codes:?}");
    assert_eq!(codes.get("Ok"), Some(&10_000), "the server limits streams per connection; the client queues the rest");
    assert!(after.saturating_sub(before) < 256 * 1024, "memory grew by {} KiB", after - before);
    assert_eq!(app.status("").await, ServingStatus::Serving);
    app.stop().await;
}

#[tokio::test]
async fn idle_and_slow_connections_do_not_stop_the_server_from_serving() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("slow")).await.id;
    let address = format!("127.0.0.1:{}", app.port);
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(&address).await.expect("idle connection"));
    }
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.expect("slow connection");
        // Half of the HTTP/2 preface, then nothing.
        stream.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served =
        tokio::time::timeout(Duration::from_secs(2), app.users(&tenant).list_users(ListUsersRequest::default())).await;
    served.expect("served promptly").expect("ok");
    assert_eq!(app.status("").await, ServingStatus::Serving);
    drop(idle);
    drop(slow);
    app.stop().await;
}
