//! The server's log lines: each carries its request's `request.id` (the `request_id` of the
//! request's audit events), and says what happened, a replay or a no-op included.

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{
    ApiKey, CreateApiKeyRequest, CreateTenantRequest, ListTenantAuditEventsRequest, ListUsersRequest,
    RevokeApiKeyRequest, Tenant,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::helpers::{ApiKeyScope, Metadata, unique_slug};
use crate::logs::{LoggedServer, request_id, span_field, with_message};

type Tenants = TenantServiceClient<InterceptedService<Channel, Metadata>>;

/// A control-plane client whose calls carry `x-request-id: <request_id>`.
fn tenants(server: &LoggedServer, request_id: &str) -> Tenants {
    TenantServiceClient::with_interceptor(server.channel.clone(), Metadata::platform().with("x-request-id", request_id))
}

fn create_request(slug: &str, request_id: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant { slug: slug.to_owned(), display_name: "Logged".into(), ..Default::default() }),
        request_id: request_id.to_owned(),
    }
}

/// The `request_id` of the tenant's audit event for `action`.
async fn audit_request_id(server: &LoggedServer, tenant_id: &str, action: &str) -> String {
    let events = tenants(server, "audit-reader")
        .list_tenant_audit_events(ListTenantAuditEventsRequest {
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner()
        .audit_events;
    let event = events.iter().find(|event| event.action == action).unwrap_or_else(|| panic!("no {action} event"));
    event.request_id.clone()
}

#[tokio::test]
async fn every_log_line_of_a_request_carries_its_request_id_which_joins_it_to_its_audit_events() {
    let server = LoggedServer::start().await;
    let tenant = tenants(&server, "log-create-1")
        .create_tenant(create_request(&unique_slug("logged"), ""))
        .await
        .expect("create")
        .into_inner();
    let mut users = UserServiceClient::with_interceptor(
        server.channel.clone(),
        Metadata::platform().tenant_id(&tenant.id).with("x-request-id", "log-list-1"),
    );
    users.list_users(ListUsersRequest::default()).await.expect("list");
    let mut refused = UserServiceClient::with_interceptor(
        server.channel.clone(),
        Metadata::platform().tenant_id(&uuid::Uuid::now_v7().to_string()).with("x-request-id", "log-refused-1"),
    );
    let status = refused.list_users(ListUsersRequest::default()).await.expect_err("no such tenant");
    assert_eq!(status.code(), Code::NotFound);

    // A line logged by a handler, and the per-RPC line, both carry the request's id.
    let create = server.request_lines("log-create-1").await;
    assert_eq!(with_message(&create, "tenant created").len(), 1, "{create:#?}");
    let finished = with_message(&create, "rpc finished");
    assert_eq!(finished.len(), 1, "{create:#?}");
    assert_eq!(span_field(finished[0], "rpc.method"), Some("/tenantd.v1.TenantService/CreateTenant"));
    assert_eq!(audit_request_id(&server, &tenant.id, "tenant.create").await, "log-create-1", "the join key");

    let list = server.request_lines("log-list-1").await;
    let finished = with_message(&list, "rpc finished");
    assert_eq!(finished.len(), 1, "{list:#?}");
    assert_eq!(finished[0]["grpc.code"], "0");
    assert_eq!(span_field(finished[0], "tenant.id"), Some(tenant.id.as_str()));

    let refusal = server.request_lines("log-refused-1").await;
    let finished = with_message(&refusal, "rpc finished");
    assert_eq!(finished.len(), 1, "a refused request is logged too: {refusal:#?}");
    assert_eq!(finished[0]["grpc.code"], "5");

    // Without x-request-id the server makes one up, and its lines and audit event share it.
    let anonymous = TenantServiceClient::with_interceptor(server.channel.clone(), Metadata::platform())
        .create_tenant(create_request(&unique_slug("unnamed"), ""))
        .await
        .expect("create")
        .into_inner();
    let generated = audit_request_id(&server, &anonymous.id, "tenant.create").await;
    assert!(uuid::Uuid::try_parse(&generated).is_ok(), "a generated id is a UUID: {generated}");
    let created =
        server.wait_for(|line| line["message"] == "tenant created" && line["tenant.id"] == anonymous.id.as_str()).await;
    assert_eq!(request_id(&created), Some(generated.as_str()));

    // Every line logged inside a tenantd RPC carries a request id (health checks pass no
    // gateway, so they have none to carry).
    let lines = server.lines();
    let in_rpcs: Vec<_> = lines
        .iter()
        .filter(|line| span_field(line, "rpc.method").is_some_and(|method| method.starts_with("/tenantd.v1.")))
        .collect();
    assert!(in_rpcs.len() >= 6, "control: the RPCs above were logged: {lines:#?}");
    for line in in_rpcs {
        assert!(request_id(line).is_some(), "a line without request.id: {line:#}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_create_logs_a_replay_with_its_request_id_not_a_second_creation() {
    let server = LoggedServer::start().await;
    let slug = unique_slug("replayed");
    let idempotency_key = uuid::Uuid::new_v4().to_string();
    let first = tenants(&server, "create-first")
        .create_tenant(create_request(&slug, &idempotency_key))
        .await
        .expect("create")
        .into_inner();
    let replay = tenants(&server, "create-replay")
        .create_tenant(create_request(&slug, &idempotency_key))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.id, first.id, "the replay returns the first response");

    let created = server.request_lines("create-first").await;
    assert_eq!(with_message(&created, "tenant created").len(), 1, "{created:#?}");
    assert!(with_message(&created, "tenant create replayed").is_empty(), "{created:#?}");
    let replayed = server.request_lines("create-replay").await;
    assert!(with_message(&replayed, "tenant created").is_empty(), "a replay creates nothing: {replayed:#?}");
    let lines = with_message(&replayed, "tenant create replayed");
    assert_eq!(lines.len(), 1, "{replayed:#?}");
    assert_eq!(lines[0]["idempotency.request_id"], idempotency_key.as_str());
    assert_eq!(lines[0]["tenant.id"], first.id.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_second_revoke_logs_that_the_key_was_already_revoked_not_a_revocation() {
    let server = LoggedServer::start().await;
    let tenant = tenants(&server, "key-tenant")
        .create_tenant(create_request(&unique_slug("keys"), ""))
        .await
        .expect("create")
        .into_inner();
    let key = tenants(&server, "key-create")
        .create_api_key(CreateApiKeyRequest {
            tenant_id: tenant.id.clone(),
            api_key: Some(ApiKey {
                display_name: "logged".into(),
                scopes: vec![ApiKeyScope::Read as i32],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("key")
        .into_inner()
        .api_key
        .expect("the key")
        .id;
    let revoke = || RevokeApiKeyRequest { tenant_id: tenant.id.clone(), id: key.clone() };
    tenants(&server, "revoke-first").revoke_api_key(revoke()).await.expect("revoke");
    let again = tenants(&server, "revoke-again").revoke_api_key(revoke()).await.expect("a no-op").into_inner();
    assert!(again.revoke_time.is_some());

    let first = server.request_lines("revoke-first").await;
    assert_eq!(with_message(&first, "api key revoked").len(), 1, "{first:#?}");
    assert!(with_message(&first, "api key already revoked").is_empty(), "{first:#?}");
    let second = server.request_lines("revoke-again").await;
    assert!(with_message(&second, "api key revoked").is_empty(), "nothing was revoked: {second:#?}");
    let lines = with_message(&second, "api key already revoked");
    assert_eq!(lines.len(), 1, "{second:#?}");
    assert_eq!(lines[0]["api_key.id"], key.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_database_that_does_not_exist_is_logged_once_at_warn_with_its_cause() {
    let missing = format!("tenantd_test_missing_{}", uuid::Uuid::new_v4().simple());
    let server = LoggedServer::start_on(missing.clone(), crate::helpers::database_url("tenantd_app", &missing)).await;
    let warning = server
        .wait_for(|line| {
            line["fields"]["message"] == "postgres probe failed: not ready"
                || line["message"] == "postgres probe failed: not ready"
        })
        .await;
    let text = warning.to_string();
    assert_eq!(warning["level"], "WARN", "{text}");
    assert!(text.contains(&missing) && text.contains("does not exist"), "the cause is in the line: {text}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let repeats = server.lines().iter().filter(|line| line.to_string().contains("postgres probe failed")).count();
    assert_eq!(repeats, 1, "once per cause, not once per probe");
    server.stop().await;
}

#[tokio::test]
async fn operator_keys_are_never_logged_and_each_operator_change_names_the_operator_and_who_made_it() {
    use tenantd::proto::operator_service_client::OperatorServiceClient;
    use tenantd::proto::{CreateOperatorRequest, ListTenantsRequest, Operator, RevokeOperatorRequest, operator};

    let server = LoggedServer::start().await;
    let operators = |metadata: Metadata| OperatorServiceClient::with_interceptor(server.channel.clone(), metadata);
    let create = |role: operator::Role| CreateOperatorRequest {
        operator: Some(Operator { display_name: "logged".into(), role: role as i32, ..Default::default() }),
    };
    let admin = operators(Metadata::platform().with("x-request-id", "op-create"))
        .create_operator(create(operator::Role::Admin))
        .await
        .expect("create an admin")
        .into_inner();
    let (admin_id, admin_key) = (admin.operator.expect("operator").id, admin.secret);
    let as_admin = |request_id: &str| Metadata::bearer(&admin_key).with("x-request-id", request_id);
    let viewer = operators(as_admin("op-create-viewer"))
        .create_operator(create(operator::Role::Viewer))
        .await
        .expect("the admin creates a viewer")
        .into_inner();
    let (viewer_id, viewer_key) = (viewer.operator.expect("operator").id, viewer.secret);
    let list = |metadata: Metadata| {
        let mut client = TenantServiceClient::with_interceptor(server.channel.clone(), metadata);
        async move { client.list_tenants(ListTenantsRequest::default()).await }
    };
    list(Metadata::bearer(&viewer_key)).await.expect("control: the viewer's key works");
    let last = viewer_key.len() - 1;
    let mistyped = format!("{}{}", &viewer_key[..last], if viewer_key.ends_with('0') { '1' } else { '0' });
    assert_eq!(list(Metadata::bearer(&mistyped)).await.expect_err("mistyped").code(), Code::Unauthenticated);
    operators(as_admin("op-revoke"))
        .revoke_operator(RevokeOperatorRequest { id: viewer_id.clone() })
        .await
        .expect("the admin revokes the viewer");
    let revoked = list(Metadata::bearer(&viewer_key).with("x-request-id", "op-revoked-call")).await;
    assert_eq!(revoked.expect_err("revoked").code(), Code::Unauthenticated);

    let created = server.request_lines("op-create-viewer").await;
    let created = with_message(&created, "operator created");
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0]["operator.id"], viewer_id.as_str());
    assert_eq!(created[0]["actor.id"], admin_id.as_str());
    let revocation = server.request_lines("op-revoke").await;
    let revocation = with_message(&revocation, "operator revoked");
    assert_eq!(revocation.len(), 1, "{revocation:#?}");
    assert_eq!(revocation[0]["operator.id"], viewer_id.as_str());
    server.request_lines("op-revoked-call").await;
    let everything = serde_json::to_string(&server.lines()).expect("json");
    for key in [&admin_key, &viewer_key, &mistyped] {
        // The id half is public; the secret half (and so the whole key) must appear nowhere.
        let secret = &key[4 + 22..];
        assert!(!everything.contains(secret), "a key's secret was logged");
    }
    assert!(everything.contains(&viewer_id), "control: the lines searched are this server's");
    server.stop().await;
}
