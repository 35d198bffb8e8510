//! The control plane: the whole tenant lifecycle.

use prost_types::FieldMask;
use tenantd::proto::get_tenant_request::Selector;
use tenantd::proto::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, GetUserRequest, ListTenantsRequest,
    ResumeTenantRequest, SuspendTenantRequest, Tenant, UpdateTenantRequest,
};
use tonic::Code;

use crate::helpers::{State, assert_error, spawn_app, unique_slug};

#[tokio::test]
async fn a_tenant_goes_through_its_whole_lifecycle() {
    let app = spawn_app().await;
    let mut tenants = app.tenants.clone();
    let slug = unique_slug("acme");

    // Create.
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("tier".to_owned(), "gold".to_owned());
    let created = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant { slug: slug.clone(), display_name: "Acme".into(), labels, ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let id = created.id.clone();
    assert_eq!(uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(), 7);
    assert_eq!(created.state, State::Active as i32);
    assert_eq!(created.labels.get("tier").map(String::as_str), Some("gold"));
    assert!(created.create_time.is_some() && created.update_time.is_some() && created.delete_time.is_none());
    assert!(!created.etag.is_empty());

    // Get by id and by slug.
    let by_id = tenants.get_tenant(GetTenantRequest { selector: Some(Selector::Id(id.clone())) }).await.expect("get");
    assert_eq!(by_id.into_inner(), created);
    let by_slug =
        tenants.get_tenant(GetTenantRequest { selector: Some(Selector::Slug(slug.clone())) }).await.expect("get");
    assert_eq!(by_slug.into_inner().id, id);

    // The slug is unique.
    let duplicate = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant { slug: slug.clone(), display_name: "Other".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(duplicate, Code::AlreadyExists, "TENANT_SLUG_ALREADY_EXISTS");

    // Update with the current etag; a stale etag is ABORTED.
    let updated = tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                id: id.clone(),
                display_name: "Acme Corp".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.display_name, "Acme Corp");
    assert_eq!(updated.labels, created.labels, "fields outside the mask are kept");
    assert_ne!(updated.etag, created.etag);
    let stale = tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                id: id.clone(),
                display_name: "Lost update".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
        })
        .await;
    assert_error(stale, Code::Aborted, "ETAG_MISMATCH");
    let immutable = tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant { id: id.clone(), slug: "renamed".into(), ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["slug".into()] }),
        })
        .await;
    assert_error(immutable, Code::InvalidArgument, "UPDATE_MASK_INVALID");

    // Suspend, suspend again (no-op), resume.
    let suspended =
        tenants.suspend_tenant(SuspendTenantRequest { id: id.clone(), etag: String::new() }).await.expect("suspend");
    assert_eq!(suspended.get_ref().state, State::Suspended as i32);
    let again =
        tenants.suspend_tenant(SuspendTenantRequest { id: id.clone(), etag: String::new() }).await.expect("suspend");
    assert_eq!(again.get_ref().etag, suspended.get_ref().etag, "a repeated transition changes nothing");
    let resumed =
        tenants.resume_tenant(ResumeTenantRequest { id: id.clone(), etag: String::new() }).await.expect("resume");
    assert_eq!(resumed.get_ref().state, State::Active as i32);

    // List, filtered by state.
    let active = tenants
        .list_tenants(ListTenantsRequest { state: State::Active as i32, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert!(active.tenants.iter().any(|tenant| tenant.id == id));
    let suspended_only = tenants
        .list_tenants(ListTenantsRequest { state: State::Suspended as i32, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert!(suspended_only.tenants.iter().all(|tenant| tenant.state == State::Suspended as i32));
    assert!(!suspended_only.tenants.iter().any(|tenant| tenant.id == id));

    // Delete: soft. Data kept, state DELETED, slug still reserved, data plane NOT_FOUND.
    let user = app.create_user(&id, "kept@example.com").await;
    let deleted =
        tenants.delete_tenant(DeleteTenantRequest { id: id.clone(), etag: String::new() }).await.expect("delete");
    assert_eq!(deleted.get_ref().state, State::Deleted as i32);
    assert!(deleted.get_ref().delete_time.is_some());
    let still_there =
        tenants.get_tenant(GetTenantRequest { selector: Some(Selector::Id(id.clone())) }).await.expect("get");
    assert_eq!(still_there.get_ref().state, State::Deleted as i32);
    let reuse = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant { slug: slug.clone(), display_name: "Squatter".into(), ..Default::default() }),
            ..Default::default()
        })
        .await;
    assert_error(reuse, Code::AlreadyExists, "TENANT_SLUG_ALREADY_EXISTS");
    let data_plane = app.users(&id).get_user(GetUserRequest { id: user.id.clone() }).await;
    assert_error(data_plane, Code::NotFound, "TENANT_NOT_FOUND");
    let suspend_deleted = tenants.suspend_tenant(SuspendTenantRequest { id: id.clone(), etag: String::new() }).await;
    assert_error(suspend_deleted, Code::FailedPrecondition, "TENANT_DELETED");
    let kept = crate::helpers::connect(&crate::helpers::pg_admin(), &app.database)
        .await
        .query_one("SELECT count(*) FROM users WHERE tenant_id = $1::text::uuid", &[&id])
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(kept, 1, "a deleted tenant's data is kept");

    // Resume on a deleted tenant is the undelete: its data and identifiers are back.
    let undeleted =
        tenants.resume_tenant(ResumeTenantRequest { id: id.clone(), etag: String::new() }).await.expect("undelete");
    assert_eq!(undeleted.get_ref().state, State::Active as i32);
    assert!(undeleted.get_ref().delete_time.is_none());
    assert_eq!(undeleted.get_ref().slug, slug);
    let back = app.users(&id).get_user(GetUserRequest { id: user.id.clone() }).await.expect("undeleted user");
    assert_eq!(back.get_ref().id, user.id);
    app.stop().await;
}

#[tokio::test]
async fn bad_control_plane_input_is_invalid_argument_with_a_field_violation() {
    let app = spawn_app().await;
    let mut tenants = app.tenants.clone();
    let bad_slug = tenants
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant { slug: "Not A Slug".into(), display_name: "x".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect_err("rejected");
    assert_eq!(bad_slug.code(), Code::InvalidArgument);
    use tonic_types::StatusExt;
    let violations =
        bad_slug.get_error_details().bad_request().map(|bad| bad.field_violations.clone()).unwrap_or_default();
    assert_eq!(violations.first().map(|violation| violation.field.as_str()), Some("tenant.slug"));

    let missing = tenants.create_tenant(CreateTenantRequest { tenant: None, ..Default::default() }).await;
    assert_error(missing, Code::InvalidArgument, "FIELD_REQUIRED");
    let bad_id = tenants.get_tenant(GetTenantRequest { selector: Some(Selector::Id("nope".into())) }).await;
    assert_error(bad_id, Code::InvalidArgument, "ID_MALFORMED");
    let unknown =
        tenants.get_tenant(GetTenantRequest { selector: Some(Selector::Id(uuid::Uuid::now_v7().to_string())) }).await;
    assert_error(unknown, Code::NotFound, "TENANT_NOT_FOUND");
    let negative = tenants.list_tenants(ListTenantsRequest { page_size: -1, ..Default::default() }).await;
    assert_error(negative, Code::InvalidArgument, "PAGE_SIZE_INVALID");
    let bad_state = tenants.list_tenants(ListTenantsRequest { state: 42, ..Default::default() }).await;
    assert_error(bad_state, Code::InvalidArgument, "STATE_INVALID");
    let no_mask =
        tenants.update_tenant(UpdateTenantRequest { tenant: Some(Tenant::default()), update_mask: None }).await;
    assert_error(no_mask, Code::InvalidArgument, "UPDATE_MASK_REQUIRED");
    app.stop().await;
}

#[tokio::test]
async fn listing_tenants_pages_through_each_tenant_once() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_tenant(&unique_slug("page")).await.id);
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .tenants
            .clone()
            .list_tenants(ListTenantsRequest { page_size: 3, page_token: page_token.clone(), ..Default::default() })
            .await
            .expect("list")
            .into_inner();
        assert!(page.tenants.len() <= 3);
        seen.extend(page.tenants.into_iter().map(|tenant| tenant.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, created, "every tenant once, in creation order");

    // A token is bound to its filter.
    let first = app
        .tenants
        .clone()
        .list_tenants(ListTenantsRequest { page_size: 1, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    let other_filter = app
        .tenants
        .clone()
        .list_tenants(ListTenantsRequest {
            page_size: 1,
            page_token: first.next_page_token,
            state: State::Deleted as i32,
        })
        .await;
    assert_error(other_filter, Code::InvalidArgument, "PAGE_TOKEN_INVALID");
    app.stop().await;
}
