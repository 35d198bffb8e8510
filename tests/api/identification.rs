//! Resolving a tenant by id, slug, domain, channel binding and API key.

use prost_types::FieldMask;
use tenantd::proto::resolve_tenant_request::Identifier;
use tenantd::proto::{
    ChannelBinding, CreateTenantRequest, DeleteTenantRequest, ResolveTenantRequest, SuspendTenantRequest, Tenant,
    UpdateTenantRequest,
};
use tonic::Code;

use crate::helpers::{ApiKeyScope, State, assert_error, spawn_app, unique_slug};

fn slack(external_id: &str) -> ChannelBinding {
    ChannelBinding { channel_type: "slack".into(), external_id: external_id.into() }
}

async fn resolve(app: &crate::helpers::TestApp, identifier: Identifier) -> Result<Tenant, tonic::Status> {
    app.tenants
        .clone()
        .resolve_tenant(ResolveTenantRequest { identifier: Some(identifier) })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn every_strategy_resolves_the_same_tenant() {
    let app = spawn_app().await;
    let slug = unique_slug("acme");
    let domain = format!("{slug}.example.com");
    let workspace = format!("T{}", &slug[5..]);
    let created = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: slug.clone(),
                display_name: "Acme".into(),
                domains: vec![domain.to_uppercase()],
                channel_bindings: vec![slack(&workspace)],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.domains, vec![domain.clone()], "domains are stored lowercase");
    let (_, key) = app.create_api_key(&created.id, &[ApiKeyScope::Read]).await;

    for identifier in [
        Identifier::Id(created.id.clone()),
        Identifier::Slug(slug.clone()),
        Identifier::Domain(domain.clone()),
        Identifier::Domain(domain.to_uppercase()),
        Identifier::ChannelBinding(slack(&workspace)),
        Identifier::ApiKey(key.clone()),
    ] {
        let resolved =
            resolve(&app, identifier.clone()).await.unwrap_or_else(|status| panic!("{identifier:?}: {status:?}"));
        assert_eq!(resolved.id, created.id, "{identifier:?}");
    }

    // Unknown identifiers are NOT_FOUND.
    assert_error(
        app.tenants
            .clone()
            .resolve_tenant(ResolveTenantRequest { identifier: Some(Identifier::Domain("nobody.example.org".into())) })
            .await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    assert_error(
        app.tenants
            .clone()
            .resolve_tenant(ResolveTenantRequest { identifier: Some(Identifier::ChannelBinding(slack("T000"))) })
            .await,
        Code::NotFound,
        "TENANT_NOT_FOUND",
    );
    assert_error(
        app.tenants
            .clone()
            .resolve_tenant(ResolveTenantRequest { identifier: Some(Identifier::ApiKey("tdk_nope".into())) })
            .await,
        Code::InvalidArgument,
        "FIELD_MALFORMED",
    );
    assert_error(
        app.tenants.clone().resolve_tenant(ResolveTenantRequest { identifier: None }).await,
        Code::InvalidArgument,
        "FIELD_REQUIRED",
    );

    // A suspended tenant resolves, with its state.
    app.tenants
        .clone()
        .suspend_tenant(SuspendTenantRequest { id: created.id.clone(), etag: String::new() })
        .await
        .expect("suspend");
    let suspended = resolve(&app, Identifier::Domain(domain)).await.expect("resolves while suspended");
    assert_eq!(suspended.state, State::Suspended as i32);
    app.stop().await;
}

#[tokio::test]
async fn identifiers_are_unique_across_tenants() {
    let app = spawn_app().await;
    let first = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("one"),
                display_name: "One".into(),
                domains: vec!["shared.example.com".into()],
                channel_bindings: vec![slack("TSHARED")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("first")
        .into_inner();
    let taken_domain = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("two"),
                display_name: "Two".into(),
                domains: vec!["shared.example.com".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_error(taken_domain, Code::AlreadyExists, "TENANT_DOMAIN_ALREADY_EXISTS");

    let second = app.create_tenant(&unique_slug("two")).await;
    let update = |tenant: Tenant, path: &str| UpdateTenantRequest {
        tenant: Some(tenant),
        update_mask: Some(FieldMask { paths: vec![path.into()] }),
    };
    let taken_binding = app
        .tenants
        .clone()
        .update_tenant(update(
            Tenant { id: second.id.clone(), channel_bindings: vec![slack("TSHARED")], ..Default::default() },
            "channel_bindings",
        ))
        .await;
    assert_error(taken_binding, Code::AlreadyExists, "TENANT_CHANNEL_BINDING_ALREADY_EXISTS");
    // Positive control: a free domain is accepted, and the failed update changed nothing.
    let updated = app
        .tenants
        .clone()
        .update_tenant(update(
            Tenant { id: second.id.clone(), domains: vec!["two.example.com".into()], ..Default::default() },
            "domains",
        ))
        .await
        .expect("free domain")
        .into_inner();
    assert_eq!(updated.domains, vec!["two.example.com".to_owned()]);
    assert!(updated.channel_bindings.is_empty());

    let bad = app
        .tenants
        .clone()
        .update_tenant(update(
            Tenant { id: second.id.clone(), domains: vec!["not a domain".into()], ..Default::default() },
            "domains",
        ))
        .await;
    assert_error(bad, Code::InvalidArgument, "DOMAINS_INVALID");
    let _ = first;
    app.stop().await;
}

#[tokio::test]
async fn a_binding_of_a_deleted_tenant_resolves_to_nothing() {
    let app = spawn_app().await;
    let tenant = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("gone"),
                display_name: "Gone".into(),
                channel_bindings: vec![slack("TGONE")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let before = resolve(&app, Identifier::ChannelBinding(slack("TGONE"))).await.expect("resolves while active");
    assert_eq!(before.id, tenant.id);
    app.tenants
        .clone()
        .delete_tenant(DeleteTenantRequest { id: tenant.id.clone(), etag: String::new() })
        .await
        .expect("delete");
    let after = app
        .tenants
        .clone()
        .resolve_tenant(ResolveTenantRequest { identifier: Some(Identifier::ChannelBinding(slack("TGONE"))) })
        .await;
    assert_error(after, Code::NotFound, "TENANT_NOT_FOUND");
    let by_id =
        app.tenants.clone().resolve_tenant(ResolveTenantRequest { identifier: Some(Identifier::Id(tenant.id)) }).await;
    assert_error(by_id, Code::NotFound, "TENANT_NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_domain_in_resolve_tenant_names_the_domain_field() {
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let resolve = |domain: &str| {
        let mut tenants = app.tenants.clone();
        let request = ResolveTenantRequest { identifier: Some(Identifier::Domain(domain.to_owned())) };
        async move { tenants.resolve_tenant(request).await }
    };
    let unknown = resolve("nobody.example.org").await.expect_err("control: a well-formed unknown domain");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = resolve("not a domain").await.expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    let fields: Vec<String> = malformed
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["domain"], "the request field is `domain`, not `domain[0]`");
    app.stop().await;
}
