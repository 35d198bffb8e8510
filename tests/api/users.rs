//! The data plane: users, isolated per tenant by PostgreSQL.

use std::collections::HashSet;

use prost_types::FieldMask;
use tenantd::proto::{
    CreateUserRequest, DeleteUserRequest, GetUserRequest, ListUsersRequest, ResumeTenantRequest, SuspendTenantRequest,
    UpdateUserRequest, User,
};
use tonic::Code;

use super::helpers::{assert_error, spawn_app, unique_slug};

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_users() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    let alice = app.create_user(&tenant_a, "alice@a.example").await;
    let bob = app.create_user(&tenant_b, "bob@b.example").await;
    let mut as_a = app.users(&tenant_a);
    let mut as_b = app.users(&tenant_b);

    // Get: A sees its own user; B gets NOT_FOUND for it, exactly as for a missing id.
    let own = as_a.get_user(GetUserRequest { id: alice.id.clone() }).await.expect("A reads its own user");
    assert_eq!(own.into_inner(), alice);
    assert_error(as_b.get_user(GetUserRequest { id: alice.id.clone() }).await, Code::NotFound, "USER_NOT_FOUND");
    let missing = uuid::Uuid::now_v7().to_string();
    assert_error(as_b.get_user(GetUserRequest { id: missing }).await, Code::NotFound, "USER_NOT_FOUND");

    // List: each sees exactly its own.
    let listed_a = as_a.list_users(ListUsersRequest::default()).await.expect("list").into_inner().users;
    assert_eq!(listed_a, vec![alice.clone()]);
    let listed_b = as_b.list_users(ListUsersRequest::default()).await.expect("list").into_inner().users;
    assert_eq!(listed_b, vec![bob.clone()]);

    // Update: B cannot rename A's user; A can.
    let rename = |id: &str, name: &str| UpdateUserRequest {
        user: Some(User { id: id.to_owned(), display_name: name.to_owned(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
    };
    assert_error(as_b.update_user(rename(&alice.id, "pwned")).await, Code::NotFound, "USER_NOT_FOUND");
    let renamed = as_a.update_user(rename(&alice.id, "Alice")).await.expect("A updates its own user").into_inner();
    assert_eq!(renamed.display_name, "Alice");

    // Delete: B cannot delete A's user, which is unchanged; A can delete it.
    let delete = |id: &str| DeleteUserRequest { id: id.to_owned(), etag: String::new() };
    assert_error(as_b.delete_user(delete(&alice.id)).await, Code::NotFound, "USER_NOT_FOUND");
    let after = as_a.get_user(GetUserRequest { id: alice.id.clone() }).await.expect("still there").into_inner();
    assert_eq!(after, renamed, "B's attempts changed nothing");
    as_a.delete_user(delete(&alice.id)).await.expect("A deletes its own user");
    assert_error(as_a.get_user(GetUserRequest { id: alice.id.clone() }).await, Code::NotFound, "USER_NOT_FOUND");

    // B's user was never affected.
    let bob_after = as_b.get_user(GetUserRequest { id: bob.id.clone() }).await.expect("bob").into_inner();
    assert_eq!(bob_after, bob);
    app.stop().await;
}

#[tokio::test]
async fn an_email_is_unique_within_a_tenant_but_not_across_tenants() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("a")).await.id;
    let tenant_b = app.create_tenant(&unique_slug("b")).await.id;
    app.create_user(&tenant_a, "Same@Example.com").await;
    let duplicate = app
        .users(&tenant_a)
        .create_user(CreateUserRequest {
            user: Some(User { email: "same@example.COM".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(duplicate, Code::AlreadyExists, "USER_EMAIL_ALREADY_EXISTS");
    let other_tenant = app.create_user(&tenant_b, "same@example.com").await;
    assert_eq!(other_tenant.email, "same@example.com");
    app.stop().await;
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_until_resumed() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("s")).await.id;
    let user = app.create_user(&tenant, "u@s.example").await;
    let mut users = app.users(&tenant);
    users.get_user(GetUserRequest { id: user.id.clone() }).await.expect("served while active");

    app.tenants
        .clone()
        .suspend_tenant(SuspendTenantRequest { id: tenant.clone(), etag: String::new() })
        .await
        .expect("suspend");
    assert_error(
        users.get_user(GetUserRequest { id: user.id.clone() }).await,
        Code::FailedPrecondition,
        "TENANT_SUSPENDED",
    );
    let create = users
        .create_user(CreateUserRequest {
            user: Some(User { email: "v@s.example".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(create, Code::FailedPrecondition, "TENANT_SUSPENDED");

    app.tenants
        .clone()
        .resume_tenant(ResumeTenantRequest { id: tenant.clone(), etag: String::new() })
        .await
        .expect("resume");
    let again = users.get_user(GetUserRequest { id: user.id.clone() }).await.expect("served again");
    assert_eq!(again.into_inner(), user);
    app.stop().await;
}

#[tokio::test]
async fn paging_through_250_users_yields_each_exactly_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("p")).await.id;
    let other = app.create_tenant(&unique_slug("q")).await.id;
    app.create_user(&other, "noise@q.example").await;
    let mut created = Vec::new();
    for index in 0..250 {
        created.push(app.create_user(&tenant, &format!("user{index}@p.example")).await.id);
    }
    let mut users = app.users(&tenant);
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = users.list_users(ListUsersRequest { page_size: 40, page_token }).await.expect("page").into_inner();
        pages += 1;
        assert!(page.users.len() <= 40);
        seen.extend(page.users.into_iter().map(|user| user.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, 7);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250, "no user twice");
    assert_eq!(seen, created, "every user once, in creation order");

    // A page token is bound to its tenant.
    let first = users.list_users(ListUsersRequest { page_size: 1, page_token: String::new() }).await.expect("page");
    let foreign = app
        .users(&other)
        .list_users(ListUsersRequest { page_size: 1, page_token: first.into_inner().next_page_token })
        .await;
    assert_error(foreign, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn user_updates_honour_the_mask_and_the_etag() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("e")).await.id;
    let user = app.create_user(&tenant, "first@e.example").await;
    let mut users = app.users(&tenant);
    let update = |etag: &str| UpdateUserRequest {
        user: Some(User {
            id: user.id.clone(),
            email: "second@e.example".into(),
            display_name: "ignored".into(),
            etag: etag.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["email".into()] }),
    };
    let updated = users.update_user(update(&user.etag)).await.expect("update").into_inner();
    assert_eq!(updated.email, "second@e.example");
    assert_eq!(updated.display_name, user.display_name, "fields outside the mask are kept");
    assert_error(users.update_user(update(&user.etag)).await, Code::Aborted, "ETAG_MISMATCH");
    let stale_delete = users.delete_user(DeleteUserRequest { id: user.id.clone(), etag: user.etag.clone() }).await;
    assert_error(stale_delete, Code::Aborted, "ETAG_MISMATCH");
    let bad_email = users
        .create_user(CreateUserRequest {
            user: Some(User { email: "no-at-sign".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(bad_email, Code::InvalidArgument, "EMAIL_MALFORMED");
    let bad_role = users
        .create_user(CreateUserRequest {
            user: Some(User { email: "r@e.example".into(), role: 99, ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(bad_role, Code::InvalidArgument, "ROLE_INVALID");
    app.stop().await;
}

#[tokio::test]
async fn every_invalid_field_of_a_create_is_reported_at_once() {
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("checks")).await.id;
    let mut users = app.users(&tenant);
    let valid = User { email: "valid@example.com".into(), display_name: "Valid".into(), ..Default::default() };
    users
        .create_user(CreateUserRequest { user: Some(valid.clone()), ..Default::default() })
        .await
        .expect("control: a valid user is created");

    let invalid = User { email: "not an email".into(), display_name: "x".repeat(500), role: 99, ..valid };
    let refused = users
        .create_user(CreateUserRequest { user: Some(invalid), ..Default::default() })
        .await
        .expect_err("three fields are invalid");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = refused.get_error_details();
    let fields: Vec<String> = details
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["user.email", "user.display_name", "user.role"], "all of them, in field order");
    assert_eq!(
        details.error_info().map(|info| info.reason.as_str()),
        Some("EMAIL_MALFORMED"),
        "the first one's reason"
    );
    app.stop().await;
}

#[tokio::test]
async fn users_pass_the_shared_isolation_check() {
    let app = spawn_app().await;
    crate::helpers::assert_isolated(
        &app,
        "USER_NOT_FOUND",
        async |tenant| app.create_user(&tenant, "ada@example.com").await.id,
        async |tenant, id| app.users(&tenant).get_user(GetUserRequest { id }).await.map(drop),
        async |tenant, id| {
            app.users(&tenant).delete_user(DeleteUserRequest { id, etag: String::new() }).await.map(drop)
        },
    )
    .await;
    app.stop().await;
}
