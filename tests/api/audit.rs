//! The audit log: one event per mutation, in the mutation's transaction, visible only to
//! its tenant, append-only for the app role.

use prost_types::FieldMask;
use tenantd::proto::{
    AuditEventFilter, CreateApiKeyRequest, CreateDocumentRequest, CreateTenantRequest, CreateUserRequest,
    DeleteDocumentRequest, DeleteTenantRequest, DeleteUserRequest, Document, ListAuditEventsRequest,
    ListTenantAuditEventsRequest, ListUsersRequest, ResumeTenantRequest, RevokeApiKeyRequest, SuspendTenantRequest,
    Tenant, UpdateDocumentRequest, UpdateTenantRequest, UpdateUserRequest, User,
};
use tonic::Code;

use crate::helpers::{ApiKeyScope, Metadata, connect, pg_admin, spawn_app, unique_slug};

/// Attaches `x-request-id` to a request.
fn with_id<T>(message: T, request_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-request-id", request_id.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn every_mutation_of_both_planes_leaves_exactly_one_event() {
    let app = spawn_app().await;
    let mut tenants = app.tenants.clone();
    let tenant = tenants
        .create_tenant(with_id(
            CreateTenantRequest {
                tenant: Some(Tenant { slug: unique_slug("aud"), display_name: "Audited".into(), ..Default::default() }),
                ..Default::default()
            },
            "req-create-tenant",
        ))
        .await
        .expect("create tenant")
        .into_inner();
    let id = tenant.id.clone();
    tenants
        .update_tenant(with_id(
            UpdateTenantRequest {
                tenant: Some(Tenant { id: id.clone(), display_name: "Audited 2".into(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
            },
            "req-update-tenant",
        ))
        .await
        .expect("update tenant");
    tenants
        .suspend_tenant(with_id(SuspendTenantRequest { id: id.clone(), etag: String::new() }, "req-suspend"))
        .await
        .expect("suspend");
    tenants
        .resume_tenant(with_id(ResumeTenantRequest { id: id.clone(), etag: String::new() }, "req-resume"))
        .await
        .expect("resume");
    let key = tenants
        .create_api_key(with_id(
            CreateApiKeyRequest {
                tenant_id: id.clone(),
                api_key: Some(tenantd::proto::ApiKey {
                    display_name: "k".into(),
                    scopes: vec![ApiKeyScope::Read as i32, ApiKeyScope::Write as i32],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            "req-create-key",
        ))
        .await
        .expect("create key")
        .into_inner();
    let key_id = key.api_key.expect("key").id;

    // Data plane, through the API key (so the actor is the key).
    let mut users = app.users_with_key(&key.secret);
    let user = users
        .create_user(with_id(
            CreateUserRequest {
                user: Some(User { email: "u@aud.example".into(), ..Default::default() }),
                ..Default::default()
            },
            "req-create-user",
        ))
        .await
        .expect("create user")
        .into_inner();
    users
        .update_user(with_id(
            UpdateUserRequest {
                user: Some(User { id: user.id.clone(), display_name: "U".into(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
            },
            "req-update-user",
        ))
        .await
        .expect("update user");
    let mut documents = tenantd::proto::document_service_client::DocumentServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::bearer(&key.secret),
    );
    let document = documents
        .create_document(with_id(
            CreateDocumentRequest {
                document: Some(Document { title: "d".into(), owner_user_id: user.id.clone(), ..Default::default() }),
                request_id: String::new(),
            },
            "req-create-document",
        ))
        .await
        .expect("create document")
        .into_inner();
    documents
        .update_document(with_id(
            UpdateDocumentRequest {
                document: Some(Document { id: document.id.clone(), title: "d2".into(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["title".into()] }),
            },
            "req-update-document",
        ))
        .await
        .expect("update document");
    documents
        .delete_document(with_id(
            DeleteDocumentRequest { id: document.id.clone(), etag: String::new() },
            "req-delete-document",
        ))
        .await
        .expect("delete document");
    users
        .delete_user(with_id(DeleteUserRequest { id: user.id.clone(), etag: String::new() }, "req-delete-user"))
        .await
        .expect("delete user");
    // Reads leave nothing.
    users.list_users(ListUsersRequest::default()).await.expect("read");
    tenants
        .revoke_api_key(with_id(RevokeApiKeyRequest { tenant_id: id.clone(), id: key_id.clone() }, "req-revoke-key"))
        .await
        .expect("revoke");
    tenants
        .delete_tenant(with_id(DeleteTenantRequest { id: id.clone(), etag: String::new() }, "req-delete-tenant"))
        .await
        .expect("delete");

    let events = tenants
        .list_tenant_audit_events(ListTenantAuditEventsRequest {
            tenant_id: id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("platform reads the tenant's events")
        .into_inner()
        .audit_events;
    let expected = [
        ("req-create-tenant", "tenant.create", "bootstrap"),
        ("req-update-tenant", "tenant.update", "bootstrap"),
        ("req-suspend", "tenant.suspend", "bootstrap"),
        ("req-resume", "tenant.resume", "bootstrap"),
        ("req-create-key", "api_key.create", "bootstrap"),
        ("req-create-user", "user.create", "api_key"),
        ("req-update-user", "user.update", "api_key"),
        ("req-create-document", "document.create", "api_key"),
        ("req-update-document", "document.update", "api_key"),
        ("req-delete-document", "document.delete", "api_key"),
        ("req-delete-user", "user.delete", "api_key"),
        ("req-revoke-key", "api_key.revoke", "bootstrap"),
        ("req-delete-tenant", "tenant.delete", "bootstrap"),
    ];
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    for (request_id, action, actor) in expected {
        let matching: Vec<_> = events.iter().filter(|event| event.request_id == request_id).collect();
        assert_eq!(matching.len(), 1, "{request_id}: {matching:?}");
        assert_eq!(matching[0].action, action);
        assert_eq!(matching[0].actor_type, actor);
        if actor == "api_key" {
            assert_eq!(matching[0].actor_id, key_id);
        }
    }
    // Newest first.
    assert_eq!(events.first().map(|event| event.action.as_str()), Some("tenant.delete"));
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_whose_audit_insert_fails_leaves_nothing_behind() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("f")).await.id;
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .batch_execute(
            "ALTER TABLE audit_events ADD CONSTRAINT test_refuse_user_create CHECK (action <> 'user.create')",
        )
        .await
        .expect("sabotage the audit table");
    let failed = app
        .users(&tenant)
        .create_user(CreateUserRequest {
            user: Some(User { email: "lost@f.example".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect_err("the audit insert fails, so the create fails");
    assert_eq!(failed.code(), Code::Internal);
    assert!(!failed.message().contains("test_refuse_user_create"), "database text leaked: {}", failed.message());
    let users: i64 = admin.query_one("SELECT count(*) FROM users", &[]).await.expect("count").get(0);
    assert_eq!(users, 0, "the user was rolled back with its audit event");

    // Positive control: without the sabotage the same create works and leaves one row.
    admin.batch_execute("ALTER TABLE audit_events DROP CONSTRAINT test_refuse_user_create").await.expect("repair");
    app.create_user(&tenant, "lost@f.example").await;
    let users: i64 = admin.query_one("SELECT count(*) FROM users", &[]).await.expect("count").get(0);
    assert_eq!(users, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_events() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let alice = app.create_user(&tenant_a, "alice@a.example").await;
    app.create_user(&tenant_b, "bob@b.example").await;

    let list = || ListAuditEventsRequest { page_size: 100, ..Default::default() };
    let events_a = app
        .audit_with(Metadata::platform().tenant_id(&tenant_a))
        .list_audit_events(list())
        .await
        .expect("A")
        .into_inner();
    assert!(events_a.audit_events.iter().any(|event| event.resource_id == alice.id), "control: A sees its own event");
    assert!(events_a.audit_events.iter().all(|event| event.tenant_id == tenant_a));
    let events_b = app
        .audit_with(Metadata::platform().tenant_id(&tenant_b))
        .list_audit_events(list())
        .await
        .expect("B")
        .into_inner();
    assert!(!events_b.audit_events.is_empty());
    assert!(events_b.audit_events.iter().all(|event| event.tenant_id == tenant_b), "B never sees A's events");

    // Filtering by resource.
    let filtered = app
        .audit_with(Metadata::platform().tenant_id(&tenant_a))
        .list_audit_events(ListAuditEventsRequest {
            filter: Some(AuditEventFilter {
                resource_type: "user".into(),
                resource_id: alice.id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner()
        .audit_events;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].action, "user.create");
    app.stop().await;
}

#[tokio::test]
async fn the_app_role_cannot_update_or_delete_audit_rows() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("ro")).await.id;
    let client = connect("tenantd_app", &app.database).await;
    client.batch_execute("BEGIN").await.expect("begin");
    crate::helpers::set_tenant(&client, &tenant).await;
    let visible: i64 = client.query_one("SELECT count(*) FROM audit_events", &[]).await.expect("select").get(0);
    assert_eq!(visible, 1, "control: the app role reads the tenant's creation event");
    let update = client.execute("UPDATE audit_events SET action = 'forged'", &[]).await.expect_err("update refused");
    assert_eq!(update.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    client.batch_execute("BEGIN").await.expect("begin");
    crate::helpers::set_tenant(&client, &tenant).await;
    let delete = client.execute("DELETE FROM audit_events", &[]).await.expect_err("delete refused");
    assert_eq!(delete.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    app.stop().await;
}
