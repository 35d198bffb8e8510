//! Steps 1 to 7 of the README's grpcurl walkthrough, call for call and in the same order, with
//! a tonic client, so that `cargo test` alone catches a change that breaks them (CI also runs
//! the README itself with real grpcurl: scripts/readme-run.sh). Keep the two in step: each
//! block names its README step.

use tenantd::proto::{
    CreateTenantRequest, CreateUserRequest, GetUserRequest, ListUsersRequest, ResumeTenantRequest,
    SuspendTenantRequest, Tenant, User,
};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Metadata, assert_error, spawn_app};

#[tokio::test]
async fn the_readme_walkthrough_works_as_written() {
    let app = spawn_app().await;
    let mut tenants = app.tenants.clone();

    // 1. Health with no metadata; reflection is covered by health::reflection_lists_both_services.
    let health = app.health().check(HealthCheckRequest { service: String::new() }).await.expect("health");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);

    // 2. Create two tenants.
    let create = |slug: &str, name: &str| CreateTenantRequest {
        tenant: Some(Tenant { slug: slug.into(), display_name: name.into(), ..Default::default() }),
        ..Default::default()
    };
    let acme = tenants.create_tenant(create("acme", "Acme")).await.expect("acme").into_inner().id;
    let globex = tenants.create_tenant(create("globex", "Globex")).await.expect("globex").into_inner().id;

    // 3. Add a user to each (Globex by slug).
    let user = |email: &str| CreateUserRequest {
        user: Some(User { email: email.into(), ..Default::default() }),
        ..Default::default()
    };
    let alice = app.users(&acme).create_user(user("alice@acme.example")).await.expect("alice").into_inner().id;
    app.users_with(Metadata::platform().tenant_slug("globex"))
        .create_user(user("bob@globex.example"))
        .await
        .expect("bob");

    // 4. Each tenant sees only its own users.
    let acme_users = app.users(&acme).list_users(ListUsersRequest::default()).await.expect("list").into_inner().users;
    assert_eq!(acme_users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(), ["alice@acme.example"]);
    let globex_users =
        app.users(&globex).list_users(ListUsersRequest::default()).await.expect("list").into_inner().users;
    assert_eq!(globex_users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(), ["bob@globex.example"]);

    // 5. Globex cannot read Acme's user.
    let cross = app.users(&globex).get_user(GetUserRequest { id: alice.clone() }).await;
    assert_error(cross, Code::NotFound, "USER_NOT_FOUND");

    // 6. Suspend Globex: its data plane answers FAILED_PRECONDITION.
    tenants.suspend_tenant(SuspendTenantRequest { id: globex.clone(), etag: String::new() }).await.expect("suspend");
    let suspended = app.users(&globex).list_users(ListUsersRequest::default()).await;
    assert_error(suspended, Code::FailedPrecondition, "TENANT_SUSPENDED");

    // 7. Resume it, and it is served again.
    tenants.resume_tenant(ResumeTenantRequest { id: globex.clone(), etag: String::new() }).await.expect("resume");
    let served = app.users(&globex).list_users(ListUsersRequest::default()).await.expect("served again");
    assert_eq!(served.into_inner().users.len(), 1);
    app.stop().await;
}
