//! Exact quotas: caps enforced in the create's own transaction (concurrent creates never
//! overshoot), freed by deletes, refused with RESOURCE_EXHAUSTED and a QuotaFailure, and
//! warnings at 80% and 100% as events and as a metric without tenant labels.

use tenantd::proto::{
    self, CreateDocumentRequest, CreateUserRequest, DeleteDocumentRequest, DeleteUserRequest, Document,
    GetTenantUsageRequest, ListTenantAuditEventsRequest, PlanLimits, RevokeApiKeyRequest, UpdateDocumentRequest, User,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{ApiKeyScope, TestApp, assert_error, spawn_app, spawn_app_with, unique_slug};
use crate::plans::{create_plan, create_tenant_on, plan_with_users};

fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest { user: Some(User { email: email.to_owned(), ..Default::default() }), ..Default::default() }
}

fn new_document(owner: &str, content: &[u8]) -> CreateDocumentRequest {
    CreateDocumentRequest {
        document: Some(Document {
            title: "t".into(),
            owner_user_id: owner.into(),
            content: content.to_vec(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn used(app: &TestApp, tenant: &str, quota: &str) -> (i64, Option<i64>) {
    let usage = app
        .tenants
        .clone()
        .get_tenant_usage(GetTenantUsageRequest { tenant_id: tenant.to_owned() })
        .await
        .expect("usage")
        .into_inner();
    let found = usage.quotas.iter().find(|usage| usage.quota == quota).expect("every quota is listed");
    (found.used, found.limit)
}

#[tokio::test]
async fn twenty_concurrent_creates_with_a_cap_of_five_create_exactly_five_and_a_delete_frees_a_slot() {
    let app = spawn_app().await;
    let plan = unique_slug("five");
    create_plan(&app, plan_with_users(&plan, 5)).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    // A tenant without a plan is unlimited: the positive control for the same 20 creates.
    let unlimited = create_tenant_on(&app, "", None).await.id;

    let creates = |tenant: String| {
        let app = &app;
        futures_util::future::join_all((0..20).map(move |index| {
            let mut users = app.users(&tenant);
            async move { users.create_user(new_user(&format!("u{index}@q.example"))).await }
        }))
    };
    let (capped, free) = tokio::join!(creates(tenant.clone()), creates(unlimited.clone()));
    let created: Vec<_> = capped.iter().filter_map(|result| result.as_ref().ok()).collect();
    assert_eq!(created.len(), 5, "exactly the cap is created");
    assert_eq!(free.iter().filter(|result| result.is_ok()).count(), 20, "no plan: all 20");
    for refused in capped.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        let details = refused.get_error_details();
        assert_eq!(details.error_info().map(|info| info.reason.as_str()), Some("QUOTA_EXCEEDED"));
        let violations = details.quota_failure().map(|failure| failure.violations.clone()).unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].subject, "users");
        assert!(details.retry_info().is_none(), "retrying does not help until something changes");
    }
    assert_eq!(used(&app, &tenant, "users").await, (5, Some(5)));

    // A delete frees exactly one slot.
    let victim = created[0].get_ref().id.clone();
    app.users(&tenant).delete_user(DeleteUserRequest { id: victim, ..Default::default() }).await.expect("delete");
    assert_eq!(used(&app, &tenant, "users").await, (4, Some(5)));
    app.users(&tenant).create_user(new_user("again@q.example")).await.expect("the freed slot is usable");
    assert_error(
        app.users(&tenant).create_user(new_user("over@q.example")).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    app.stop().await;
}

#[tokio::test]
async fn documents_document_bytes_and_api_keys_are_capped_the_same_way() {
    let app = spawn_app().await;
    let plan = unique_slug("docs");
    let mut limits = plan_with_users(&plan, 10);
    limits.limits = Some(PlanLimits {
        max_documents: Some(3),
        max_document_bytes: Some(100),
        max_api_keys: Some(1),
        ..Default::default()
    });
    create_plan(&app, limits).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    let owner = app.create_user(&tenant, "o@q.example").await.id;
    let mut documents = app.documents(&tenant);

    // Bytes: 60 fit, 50 more do not (110 > 100), 40 do.
    let first = documents.create_document(new_document(&owner, &[1; 60])).await.expect("60 bytes").into_inner();
    assert_error(
        documents.create_document(new_document(&owner, &[1; 50])).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    documents.create_document(new_document(&owner, &[1; 40])).await.expect("40 bytes: exactly 100");
    assert_eq!(used(&app, &tenant, "document_bytes").await, (100, Some(100)));
    // An update that grows content is charged the growth; one that shrinks it frees it.
    let grow = |id: &str, size: usize| UpdateDocumentRequest {
        document: Some(Document { id: id.to_owned(), content: vec![2; size], ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["content".into()] }),
    };
    assert_error(documents.update_document(grow(&first.id, 61)).await, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    documents.update_document(grow(&first.id, 10)).await.expect("shrink");
    assert_eq!(used(&app, &tenant, "document_bytes").await, (50, Some(100)));
    // Count: a third document fits, a fourth does not; a delete frees both count and bytes.
    documents.create_document(new_document(&owner, &[])).await.expect("third document");
    assert_error(documents.create_document(new_document(&owner, &[])).await, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    documents
        .delete_document(DeleteDocumentRequest { id: first.id.clone(), ..Default::default() })
        .await
        .expect("delete");
    assert_eq!(used(&app, &tenant, "documents").await, (2, Some(3)));
    assert_eq!(used(&app, &tenant, "document_bytes").await, (40, Some(100)));

    // API keys: one fits, a second does not; revoking frees the slot.
    let (key, _) = app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    let second = app
        .tenants
        .clone()
        .create_api_key(proto::CreateApiKeyRequest {
            tenant_id: tenant.clone(),
            api_key: Some(proto::ApiKey {
                display_name: "k".into(),
                scopes: vec![ApiKeyScope::Read as i32],
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    assert_error(second, Code::ResourceExhausted, "QUOTA_EXCEEDED");
    app.tenants
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { tenant_id: tenant.clone(), id: key.clone() })
        .await
        .expect("revoke");
    app.tenants
        .clone()
        .revoke_api_key(RevokeApiKeyRequest { tenant_id: tenant.clone(), id: key })
        .await
        .expect("revoking twice frees nothing more");
    assert_eq!(used(&app, &tenant, "api_keys").await, (0, Some(1)));
    app.create_api_key(&tenant, &[ApiKeyScope::Read]).await;
    app.stop().await;
}

#[tokio::test]
async fn crossing_80_and_100_percent_records_warning_events_and_a_metric_by_plan_and_quota() {
    let app = spawn_app_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().expect("address"))).await;
    let plan = unique_slug("warn");
    create_plan(&app, plan_with_users(&plan, 5)).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    let warnings = |app: &TestApp| {
        let tenant = tenant.clone();
        let mut tenants = app.tenants.clone();
        async move {
            tenants
                .list_tenant_audit_events(ListTenantAuditEventsRequest { tenant_id: tenant, ..Default::default() })
                .await
                .expect("audit")
                .into_inner()
                .audit_events
                .into_iter()
                .filter(|event| event.action == "quota.warning")
                .map(|event| format!("{:?}", event.details))
                .collect::<Vec<_>>()
        }
    };
    for index in 0..3 {
        app.create_user(&tenant, &format!("w{index}@q.example")).await;
    }
    assert!(warnings(&app).await.is_empty(), "3 of 5 is below 80%");
    app.create_user(&tenant, "w3@q.example").await;
    let after_four = warnings(&app).await;
    assert_eq!(after_four.len(), 1, "4 of 5 crosses 80%");
    assert!(after_four[0].contains("80"));
    app.create_user(&tenant, "w4@q.example").await;
    assert_eq!(warnings(&app).await.len(), 2, "5 of 5 crosses 100%");
    let _ = app.users(&tenant).create_user(new_user("w5@q.example")).await;
    assert_eq!(warnings(&app).await.len(), 2, "a refused create crosses nothing");

    let text = crate::metrics::scrape(app.metrics_port.expect("metrics")).await;
    for threshold in ["80", "100"] {
        let line = format!(
            "tenantd_quota_warnings_total{{plan=\"{plan}\",quota=\"users\",threshold_percent=\"{threshold}\"}} 1"
        );
        assert!(text.contains(&line), "missing {line}");
    }
    assert!(!text.lines().any(|line| line.starts_with("tenantd_quota") && line.contains(&tenant)), "no tenant label");
    app.stop().await;
}

/// Sets a tenant's limit overrides (`None`: none) through UpdateTenant.
async fn override_limits(app: &TestApp, tenant: &str, overrides: Option<PlanLimits>) {
    app.tenants
        .clone()
        .update_tenant(proto::UpdateTenantRequest {
            tenant: Some(proto::Tenant { id: tenant.to_owned(), limit_overrides: overrides, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["limit_overrides".into()] }),
        })
        .await
        .expect("update overrides");
}

/// Moves a tenant to `plan` (empty: none) through UpdateTenant.
async fn move_to_plan(app: &TestApp, tenant: &str, plan: &str) {
    app.tenants
        .clone()
        .update_tenant(proto::UpdateTenantRequest {
            tenant: Some(proto::Tenant { id: tenant.to_owned(), plan: plan.to_owned(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["plan".into()] }),
        })
        .await
        .expect("update plan");
}

/// The tenant's counter rows as the database holds them: `(quota, used, counted_at as text)`.
async fn counters(app: &TestApp, tenant: &str) -> Vec<(String, i64, String)> {
    let client = crate::helpers::connect(&crate::helpers::pg_admin(), &app.database).await;
    client
        .query(
            "SELECT quota, used, counted_at::text FROM tenant_quota_usage WHERE tenant_id::text = $1 ORDER BY quota",
            &[&tenant],
        )
        .await
        .expect("counters")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Twenty concurrent CreateUser for `tenant`: how many were created (every other one must be
/// refused by the quota).
async fn twenty_concurrent_creates(app: &TestApp, tenant: &str, tag: &str) -> usize {
    let results = futures_util::future::join_all((0..20).map(|index| {
        let mut users = app.users(tenant);
        async move { users.create_user(new_user(&format!("{tag}{index}@q.example"))).await }
    }))
    .await;
    for refused in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(crate::helpers::reason(refused), "QUOTA_EXCEEDED", "{refused:?}");
    }
    results.iter().filter(|result| result.is_ok()).count()
}

#[tokio::test]
async fn a_tenant_without_a_cap_keeps_no_counter_and_its_usage_is_still_exact() {
    let app = spawn_app().await;
    let plan = unique_slug("uncapped");
    // A plan that caps documents only: its users are uncounted, its documents counted.
    let mut documents_only = plan_with_users(&plan, 1);
    documents_only.limits = Some(PlanLimits { max_documents: Some(10), ..Default::default() });
    create_plan(&app, documents_only).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    let owner = app.create_user(&tenant, "a@q.example").await.id;
    app.create_user(&tenant, "b@q.example").await;
    app.documents(&tenant).create_document(new_document(&owner, &[1; 7])).await.expect("document");

    let kept: Vec<_> = counters(&app, &tenant).await.into_iter().map(|(quota, used, _)| (quota, used)).collect();
    assert_eq!(kept, vec![("documents".to_owned(), 1)], "only the capped quota has a counter");
    assert_eq!(used(&app, &tenant, "users").await, (2, None), "uncounted, yet read exactly from the rows");
    assert_eq!(used(&app, &tenant, "document_bytes").await, (7, None));
    assert_eq!(used(&app, &tenant, "documents").await, (1, Some(10)));
    app.stop().await;
}

#[tokio::test]
async fn a_cap_applied_after_rows_exist_counts_them_and_twenty_concurrent_creates_fill_exactly_the_rest() {
    let app = spawn_app().await;
    let tenant = create_tenant_on(&app, "", None).await.id;
    for index in 0..3 {
        app.create_user(&tenant, &format!("before{index}@q.example")).await;
    }
    assert!(counters(&app, &tenant).await.is_empty(), "no cap, no counter");

    override_limits(&app, &tenant, Some(PlanLimits { max_users: Some(5), ..Default::default() })).await;
    assert_eq!(twenty_concurrent_creates(&app, &tenant, "after").await, 2, "3 existed: 2 more fit under 5");
    assert_eq!(used(&app, &tenant, "users").await, (5, Some(5)));
    // The positive control: with the cap lifted again, the same creates all pass.
    override_limits(&app, &tenant, None).await;
    assert_eq!(twenty_concurrent_creates(&app, &tenant, "free").await, 20);
    app.stop().await;
}

#[tokio::test]
async fn capped_then_uncapped_then_capped_again_recounts_what_changed_while_no_cap_applied() {
    let app = spawn_app().await;
    let plan = unique_slug("recap");
    create_plan(&app, plan_with_users(&plan, 6)).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    let first = app.create_user(&tenant, "c0@q.example").await.id;
    app.create_user(&tenant, "c1@q.example").await;
    assert_eq!(counters(&app, &tenant).await[0].1, 2, "capped: counted");

    // Off the plan: creates and deletes are not counted, so the counter falls behind.
    move_to_plan(&app, &tenant, "").await;
    for index in 0..4 {
        app.create_user(&tenant, &format!("u{index}@q.example")).await;
    }
    app.users(&tenant).delete_user(DeleteUserRequest { id: first, ..Default::default() }).await.expect("delete");
    assert_eq!(counters(&app, &tenant).await[0].1, 2, "uncapped: the counter is left alone");
    assert_eq!(used(&app, &tenant, "users").await, (5, None));

    // Back on the plan: the first capped create recounts (5 rows, its own makes 6 of 6).
    move_to_plan(&app, &tenant, &plan).await;
    app.create_user(&tenant, "fits@q.example").await;
    assert_error(
        app.users(&tenant).create_user(new_user("over@q.example")).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    assert_eq!(used(&app, &tenant, "users").await, (6, Some(6)));
    assert_eq!(counters(&app, &tenant).await[0].1, 6);
    app.stop().await;
}

#[tokio::test]
async fn a_trusted_counter_is_charged_without_recounting_and_stays_exact_under_concurrency() {
    let app = spawn_app().await;
    let plan = unique_slug("trusted");
    create_plan(&app, plan_with_users(&plan, 5)).await;
    let tenant = create_tenant_on(&app, &plan, None).await.id;
    // The limits changed an hour ago (past the recount grace), before the record is cached.
    let client = crate::helpers::connect(&crate::helpers::pg_admin(), &app.database).await;
    client
        .execute("UPDATE tenants SET update_time = now() - interval '1 hour' WHERE id::text = $1", &[&tenant])
        .await
        .expect("backdate tenant");
    client
        .execute("UPDATE plans SET update_time = now() - interval '1 hour' WHERE name = $1", &[&plan])
        .await
        .expect("backdate plan");

    app.create_user(&tenant, "first@q.example").await;
    let recounted = counters(&app, &tenant).await;
    assert_eq!(recounted[0].1, 1, "the first capped create recounts");
    assert_eq!(twenty_concurrent_creates(&app, &tenant, "t").await, 4);
    let charged = counters(&app, &tenant).await;
    assert_eq!(charged[0].1, 5);
    assert_eq!(charged[0].2, recounted[0].2, "charged by increments: not recounted since");
    let victim = app
        .users(&tenant)
        .list_users(proto::ListUsersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .users
        .remove(0)
        .id;
    app.users(&tenant).delete_user(DeleteUserRequest { id: victim, ..Default::default() }).await.expect("delete");
    assert_eq!(twenty_concurrent_creates(&app, &tenant, "again").await, 1, "a delete frees exactly one slot");
    assert_eq!(counters(&app, &tenant).await[0].2, recounted[0].2);
    app.stop().await;
}

#[tokio::test]
async fn an_override_lifts_a_plans_cap_to_unlimited_and_contradictory_or_unknown_names_are_invalid() {
    let app = spawn_app().await;
    let plan = unique_slug("lift");
    create_plan(&app, plan_with_users(&plan, 1)).await;
    let lifted = PlanLimits { unlimited: vec!["max_users".into()], ..Default::default() };
    let free = create_tenant_on(&app, &plan, Some(lifted.clone())).await;
    assert_eq!(free.limit_overrides, Some(lifted.clone()), "the override reads back as sent");
    let capped = create_tenant_on(&app, &plan, None).await.id;
    for index in 0..3 {
        app.create_user(&free.id, &format!("l{index}@q.example")).await;
    }
    assert_eq!(used(&app, &free.id, "users").await, (3, None), "lifted: unlimited despite the plan's cap of 1");
    // The positive control: the same plan without the override is capped at 1.
    app.create_user(&capped, "one@q.example").await;
    assert_error(
        app.users(&capped).create_user(new_user("two@q.example")).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );
    // Lifting a cap later works the same way (UpdateTenant), and dropping the override caps again.
    override_limits(&app, &capped, Some(lifted)).await;
    app.create_user(&capped, "two@q.example").await;
    override_limits(&app, &capped, None).await;
    assert_error(
        app.users(&capped).create_user(new_user("three@q.example")).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );

    let invalid = |unlimited: &[&str], max_users: Option<i64>| PlanLimits {
        unlimited: unlimited.iter().map(|name| (*name).to_owned()).collect(),
        max_users,
        ..Default::default()
    };
    for overrides in [invalid(&["max_users"], Some(3)), invalid(&["max_people"], None)] {
        let result = app
            .tenants
            .clone()
            .update_tenant(proto::UpdateTenantRequest {
                tenant: Some(proto::Tenant {
                    id: capped.clone(),
                    limit_overrides: Some(overrides),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["limit_overrides".into()] }),
            })
            .await;
        assert_error(result, Code::InvalidArgument, "LIMITS_INVALID");
    }
    let mut lifting_plan = plan_with_users(&unique_slug("nolift"), 1);
    lifting_plan.limits = Some(invalid(&["max_documents"], Some(1)));
    let result = crate::plans::plans(&app, crate::helpers::PLATFORM_TOKEN)
        .create_plan(proto::CreatePlanRequest { plan: Some(lifting_plan), ..Default::default() })
        .await;
    assert_error(result, Code::InvalidArgument, "LIMITS_INVALID");
    app.stop().await;
}
