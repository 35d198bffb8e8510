//! Operators: named platform credentials with roles, their revocation across replicas, the
//! audit trail that names them, and the bootstrap token.

use std::time::{Duration, Instant};

use tenantd::auth::operator_key::OperatorKeyToken;
use tenantd::proto::operator::Role;
use tenantd::proto::operator_service_client::OperatorServiceClient;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    self, CreateOperatorRequest, CreateTenantRequest, CreateUserRequest, GetOperatorRequest, ListOperatorsRequest,
    ListTenantAuditEventsRequest, ListTenantsRequest, ListUsersRequest, RevokeOperatorRequest, SuspendTenantRequest,
    Tenant, User,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    ApiKeyScope, Metadata, PLATFORM_TOKEN, TestApp, assert_error, spawn_app, start, test_config, unique_slug,
};

type Operators = OperatorServiceClient<InterceptedService<Channel, Metadata>>;
type Tenants = TenantServiceClient<InterceptedService<Channel, Metadata>>;

fn operators(app: &TestApp, credential: &str) -> Operators {
    OperatorServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(credential))
}

fn tenants(app: &TestApp, credential: &str) -> Tenants {
    TenantServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(credential))
}

/// Creates an operator with the bootstrap token; returns (operator id, key).
pub(crate) async fn create_operator(app: &TestApp, name: &str, role: Role) -> (String, String) {
    let response = operators(app, PLATFORM_TOKEN)
        .create_operator(CreateOperatorRequest {
            operator: Some(proto::Operator { display_name: name.to_owned(), role: role as i32, ..Default::default() }),
        })
        .await
        .expect("create operator")
        .into_inner();
    (response.operator.expect("operator").id, response.secret)
}

fn new_tenant(slug: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant { slug: slug.to_owned(), display_name: slug.to_owned(), ..Default::default() }),
        ..Default::default()
    }
}

fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest { user: Some(User { email: email.into(), ..Default::default() }), ..Default::default() }
}

fn new_key() -> proto::CreateApiKeyRequest {
    proto::CreateApiKeyRequest {
        api_key: Some(proto::ApiKey {
            display_name: "k".into(),
            scopes: vec![ApiKeyScope::Read as i32],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn new_operator(role: Role) -> CreateOperatorRequest {
    CreateOperatorRequest {
        operator: Some(proto::Operator { display_name: "made".into(), role: role as i32, ..Default::default() }),
    }
}

const DENIED: (Code, &str) = (Code::PermissionDenied, "OPERATOR_ROLE_INSUFFICIENT");

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    assert_error(result, DENIED.0, DENIED.1);
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_write_on_either_plane() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("v")).await.id;
    let (_, viewer) = create_operator(&app, "viewer", Role::Viewer).await;
    let mut control = tenants(&app, &viewer);
    control.list_tenants(ListTenantsRequest::default()).await.expect("a viewer lists tenants");
    assert_denied(control.create_tenant(new_tenant(&unique_slug("v"))).await);
    assert_denied(control.suspend_tenant(SuspendTenantRequest { id: tenant.clone(), ..Default::default() }).await);
    operators(&app, &viewer).list_operators(ListOperatorsRequest::default()).await.expect("a viewer lists operators");
    assert_denied(operators(&app, &viewer).create_operator(new_operator(Role::Viewer)).await);

    let mut data = app.users_with(Metadata::bearer(&viewer).tenant_id(&tenant));
    data.list_users(ListUsersRequest::default()).await.expect("a viewer reads tenant data");
    assert_denied(data.create_user(new_user("v@v.example")).await);
    app.stop().await;
}

#[tokio::test]
async fn an_operator_runs_the_tenant_lifecycle_but_cannot_manage_credentials() {
    let app = spawn_app().await;
    let (_, key) = create_operator(&app, "operator", Role::Operator).await;
    let mut control = tenants(&app, &key);
    let tenant = control.create_tenant(new_tenant(&unique_slug("o"))).await.expect("an operator creates").into_inner();
    control
        .suspend_tenant(SuspendTenantRequest { id: tenant.id.clone(), ..Default::default() })
        .await
        .expect("an operator suspends");
    control
        .resume_tenant(proto::ResumeTenantRequest { id: tenant.id.clone(), ..Default::default() })
        .await
        .expect("an operator resumes");
    assert_denied(
        control.create_api_key(proto::CreateApiKeyRequest { tenant_id: tenant.id.clone(), ..new_key() }).await,
    );
    let (key_id, _) = app.create_api_key(&tenant.id, &[ApiKeyScope::Read]).await;
    assert_denied(
        control.revoke_api_key(proto::RevokeApiKeyRequest { tenant_id: tenant.id.clone(), id: key_id }).await,
    );
    control
        .list_api_keys(proto::ListApiKeysRequest { tenant_id: tenant.id.clone(), ..Default::default() })
        .await
        .expect("listing keys is a read");
    let mut its_operators = operators(&app, &key);
    assert_denied(its_operators.create_operator(new_operator(Role::Viewer)).await);
    let (viewer_id, _) = create_operator(&app, "viewer", Role::Viewer).await;
    assert_denied(its_operators.revoke_operator(RevokeOperatorRequest { id: viewer_id.clone() }).await);
    its_operators.get_operator(GetOperatorRequest { id: viewer_id }).await.expect("an operator reads operators");

    let mut data = app.users_with(Metadata::bearer(&key).tenant_id(&tenant.id));
    data.create_user(new_user("o@o.example")).await.expect("an operator writes tenant data");
    app.stop().await;
}

#[tokio::test]
async fn an_admin_manages_keys_and_operators_and_records_itself_as_their_author() {
    let app = spawn_app().await;
    let (admin_id, admin) = create_operator(&app, "admin", Role::Admin).await;
    let tenant = app.create_tenant(&unique_slug("a")).await.id;
    let mut control = tenants(&app, &admin);
    let created = control
        .create_api_key(proto::CreateApiKeyRequest { tenant_id: tenant.clone(), ..new_key() })
        .await
        .expect("an admin creates API keys")
        .into_inner();
    control
        .revoke_api_key(proto::RevokeApiKeyRequest { tenant_id: tenant, id: created.api_key.expect("key").id })
        .await
        .expect("an admin revokes API keys");

    let mut its_operators = operators(&app, &admin);
    let made = its_operators.create_operator(new_operator(Role::Viewer)).await.expect("an admin creates").into_inner();
    let made = made.operator.expect("operator");
    assert_eq!(made.created_by, format!("operator:{admin_id}"));
    assert_eq!(made.role, Role::Viewer as i32);
    let revoked = its_operators.revoke_operator(RevokeOperatorRequest { id: made.id.clone() }).await;
    let revoked = revoked.expect("an admin revokes").into_inner();
    assert_eq!(revoked.revoked_by, format!("operator:{admin_id}"));
    assert!(revoked.revoke_time.is_some());
    let again = its_operators.revoke_operator(RevokeOperatorRequest { id: made.id.clone() }).await;
    assert_eq!(again.expect("revoking twice is a no-op").into_inner(), revoked);

    let listed = its_operators.list_operators(ListOperatorsRequest::default()).await.expect("list").into_inner();
    let ids: Vec<&str> = listed.operators.iter().map(|operator| operator.id.as_str()).collect();
    assert_eq!(ids, [admin_id.as_str(), made.id.as_str()], "oldest first");
    let bootstrap_made = &listed.operators[0];
    assert_eq!(bootstrap_made.created_by, "bootstrap");
    assert!(!format!("{listed:?}").contains(&admin[4..30]), "no part of a key is listed");
    app.stop().await;
}

#[tokio::test]
async fn bad_operator_keys_and_requests_get_their_own_codes_and_reasons() {
    let app = spawn_app().await;
    let (operator_id, key) = create_operator(&app, "revoked soon", Role::Admin).await;
    let mut control = tenants(&app, &key);
    control.list_tenants(ListTenantsRequest::default()).await.expect("control: the key works before revocation");

    let unknown = OperatorKeyToken::generate(uuid::Uuid::now_v7()).expect("randomness").encode();
    let other_secret =
        OperatorKeyToken::generate(uuid::Uuid::parse_str(&operator_id).expect("uuid")).expect("randomness").encode();
    let last = key.len() - 1;
    let mistyped = format!("{}{}", &key[..last], if key.ends_with('0') { '1' } else { '0' });
    let cases = [
        (unknown.as_str(), Code::Unauthenticated, "OPERATOR_KEY_INVALID"),
        (other_secret.as_str(), Code::Unauthenticated, "OPERATOR_KEY_INVALID"),
        ("tdo_short", Code::Unauthenticated, "OPERATOR_KEY_MALFORMED"),
        (mistyped.as_str(), Code::Unauthenticated, "OPERATOR_KEY_CHECKSUM_MISMATCH"),
    ];
    for (credential, code, expected) in cases {
        assert_error(tenants(&app, credential).list_tenants(ListTenantsRequest::default()).await, code, expected);
    }

    let mut admin = operators(&app, &key);
    let missing = admin.get_operator(GetOperatorRequest { id: uuid::Uuid::now_v7().to_string() }).await;
    assert_error(missing, Code::NotFound, "OPERATOR_NOT_FOUND");
    assert_error(
        admin.get_operator(GetOperatorRequest { id: "x".into() }).await,
        Code::InvalidArgument,
        "ID_MALFORMED",
    );
    let no_role =
        CreateOperatorRequest { operator: Some(proto::Operator { display_name: "n".into(), ..Default::default() }) };
    assert_error(admin.create_operator(no_role).await, Code::InvalidArgument, "FIELD_REQUIRED");
    let bad_role = CreateOperatorRequest {
        operator: Some(proto::Operator { display_name: "n".into(), role: 99, ..Default::default() }),
    };
    assert_error(admin.create_operator(bad_role).await, Code::InvalidArgument, "ROLE_INVALID");

    operators(&app, PLATFORM_TOKEN)
        .revoke_operator(RevokeOperatorRequest { id: operator_id })
        .await
        .expect("revoke with the bootstrap token");
    assert_error(
        control.list_tenants(ListTenantsRequest::default()).await,
        Code::Unauthenticated,
        "OPERATOR_KEY_REVOKED",
    );
    let data = app.users_with(Metadata::bearer(&key).tenant_id(&app.create_tenant(&unique_slug("r")).await.id));
    assert_error(
        data.clone().list_users(ListUsersRequest::default()).await,
        Code::Unauthenticated,
        "OPERATOR_KEY_REVOKED",
    );
    app.stop().await;
}

#[tokio::test]
async fn audit_events_name_the_operator_on_both_planes_and_the_bootstrap_token_as_bootstrap() {
    let app = spawn_app().await;
    let (operator_id, key) = create_operator(&app, "auditor", Role::Operator).await;
    let tenant = tenants(&app, &key).create_tenant(new_tenant(&unique_slug("au"))).await.expect("create").into_inner();
    // The impersonation trail: an operator acting for the tenant on its data plane.
    app.users_with(Metadata::bearer(&key).tenant_id(&tenant.id))
        .create_user(new_user("au@au.example"))
        .await
        .expect("create a user for the tenant");
    app.tenants
        .clone()
        .suspend_tenant(SuspendTenantRequest { id: tenant.id.clone(), ..Default::default() })
        .await
        .expect("suspend with the bootstrap token");

    let events = tenants(&app, &key)
        .list_tenant_audit_events(ListTenantAuditEventsRequest { tenant_id: tenant.id.clone(), ..Default::default() })
        .await
        .expect("an operator reads the tenant's events")
        .into_inner()
        .audit_events;
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|event| (event.action.as_str(), event.actor_type.as_str(), event.actor_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("tenant.suspend", "bootstrap", ""),
            ("user.create", "operator", operator_id.as_str()),
            ("tenant.create", "operator", operator_id.as_str()),
        ],
        "newest first"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_bootstrap_token_disabled_it_is_refused_and_operator_keys_still_work() {
    let app = spawn_app().await;
    let (_, key) = create_operator(&app, "first admin", Role::Admin).await;
    let mut config = test_config(&app.database);
    config.platform_token = None;
    let locked = start(app.database.clone(), config).await;
    locked.wait_for_status("", ServingStatus::Serving).await;

    tenants(&locked, &key).list_tenants(ListTenantsRequest::default()).await.expect("control: an operator key works");
    let refused = tenants(&locked, PLATFORM_TOKEN).list_tenants(ListTenantsRequest::default()).await;
    assert_error(refused, Code::Unauthenticated, "CREDENTIALS_INVALID");
    let tenant = app.create_tenant(&unique_slug("b")).await.id;
    let data = locked.users_with(Metadata::platform().tenant_id(&tenant));
    assert_error(
        data.clone().list_users(ListUsersRequest::default()).await,
        Code::Unauthenticated,
        "CREDENTIALS_INVALID",
    );
    // The server that still has it accepts it (positive control of the token itself).
    app.tenants.clone().list_tenants(ListTenantsRequest::default()).await.expect("bootstrap enabled elsewhere");

    locked.shutdown.cancel();
    locked.server.await.expect("task").expect("clean stop");
    app.stop().await;
}

/// Each trial: a fresh operator key, used on the second replica (positive control, and it
/// fills that replica's caches), revoked through the first, then polled on the second until
/// refused. Every trial must be refused within 1 s; the distribution is printed (see
/// docs/performance.md for the command).
#[tokio::test]
async fn an_operator_revoked_on_one_replica_is_refused_by_another_within_a_second() {
    const TRIALS: usize = 20;
    let first = spawn_app().await;
    let second = start(first.database.clone(), test_config(&first.database)).await;
    second.wait_for_status("", ServingStatus::Serving).await;
    second.wait_for_status("redis", ServingStatus::Serving).await;

    // Per trial: the time to the second replica's first refusal, from before the revoke RPC and
    // from its return.
    let mut propagation: Vec<(Duration, Duration)> = Vec::with_capacity(TRIALS);
    // Calls the second replica still accepted after the revoke RPC returned, over all trials.
    let mut still_accepted = 0;
    for trial in 0..TRIALS {
        let (operator_id, key) = create_operator(&first, &format!("trial {trial}"), Role::Viewer).await;
        let mut through_second = tenants(&second, &key);
        for _ in 0..3 {
            through_second.list_tenants(ListTenantsRequest::default()).await.expect("the key works on the second");
        }
        let revoking = Instant::now();
        operators(&first, PLATFORM_TOKEN)
            .revoke_operator(RevokeOperatorRequest { id: operator_id })
            .await
            .expect("revoke through the first replica");
        let revoked = Instant::now();
        let mut accepted = 0;
        loop {
            match through_second.list_tenants(ListTenantsRequest::default()).await {
                Err(status) if status.code() == Code::Unauthenticated => {
                    assert_eq!(crate::helpers::reason(&status), "OPERATOR_KEY_REVOKED");
                    break;
                }
                Ok(_) => accepted += 1,
                Err(status) => panic!("unexpected status {status:?}"),
            }
            assert!(revoking.elapsed() < Duration::from_secs(1), "trial {trial}: not refused within 1 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        propagation.push((revoking.elapsed(), revoked.elapsed()));
        still_accepted += accepted;
    }
    let summary = |mut durations: Vec<Duration>| {
        durations.sort();
        let at = |quantile: f64| durations[((TRIALS - 1) as f64 * quantile).round() as usize];
        format!("min {:?} median {:?} p90 {:?} max {:?}", durations[0], at(0.5), at(0.9), durations[TRIALS - 1])
    };
    println!(
        "operator revocation over {TRIALS} trials, to the second replica's first refusal: from before the revoke RPC \
         {}; from its return {} (calls still accepted after the return: {still_accepted})",
        summary(propagation.iter().map(|(total, _)| *total).collect()),
        summary(propagation.iter().map(|(_, after)| *after).collect()),
    );
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}
