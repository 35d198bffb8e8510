//! Plans: the control plane's CRUD and roles, a tenant's plan and overrides, and a plan
//! change reaching every replica within a second.

use std::time::{Duration, Instant};

use tenantd::proto::operator::Role;
use tenantd::proto::operator_service_client::OperatorServiceClient;
use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::{
    self, CreateOperatorRequest, CreatePlanRequest, CreateTenantRequest, CreateUserRequest, GetPlanRequest,
    GetTenantRequest, GetTenantUsageRequest, ListPlansRequest, Plan, PlanLimits, RequestRate, Tenant,
    UpdatePlanRequest, UpdateTenantRequest, User, get_tenant_request,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::helpers::{Metadata, PLATFORM_TOKEN, TestApp, assert_error, spawn_app, start, test_config, unique_slug};

/// A plan client with `credential`.
pub fn plans(app: &TestApp, credential: &str) -> PlanServiceClient<InterceptedService<Channel, Metadata>> {
    PlanServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(credential))
}

/// A plan named `name` with a cap of `max_users` users.
pub fn plan_with_users(name: &str, max_users: i64) -> Plan {
    Plan {
        name: name.to_owned(),
        display_name: format!("Plan {name}"),
        limits: Some(PlanLimits { max_users: Some(max_users), ..Default::default() }),
        ..Default::default()
    }
}

/// Creates `plan` with the bootstrap token.
pub async fn create_plan(app: &TestApp, plan: Plan) -> Plan {
    plans(app, PLATFORM_TOKEN)
        .create_plan(CreatePlanRequest { plan: Some(plan), ..Default::default() })
        .await
        .expect("create plan")
        .into_inner()
}

/// Creates a tenant on `plan` (empty: none), with `overrides`.
pub async fn create_tenant_on(app: &TestApp, plan: &str, overrides: Option<PlanLimits>) -> Tenant {
    let slug = unique_slug("p");
    app.tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: slug.clone(),
                display_name: slug,
                plan: plan.to_owned(),
                limit_overrides: overrides,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create tenant")
        .into_inner()
}

fn new_user(email: &str) -> CreateUserRequest {
    CreateUserRequest { user: Some(User { email: email.to_owned(), ..Default::default() }), ..Default::default() }
}

async fn operator_key(app: &TestApp, role: Role) -> String {
    OperatorServiceClient::with_interceptor(app.channel.clone(), Metadata::platform())
        .create_operator(CreateOperatorRequest {
            operator: Some(proto::Operator { display_name: "p".into(), role: role as i32, ..Default::default() }),
        })
        .await
        .expect("create operator")
        .into_inner()
        .secret
}

#[tokio::test]
async fn plans_are_created_read_listed_and_updated_with_roles_etags_and_validation() {
    let app = spawn_app().await;
    let name = unique_slug("gold");
    let rate = RequestRate { per_second: 100, burst: 200 };
    let mut wanted = plan_with_users(&name, 10);
    wanted.limits.as_mut().expect("limits").tenant_rate = Some(rate);
    wanted.settings.insert("beta".into(), prost_types::Value { kind: Some(prost_types::value::Kind::BoolValue(true)) });

    // A viewer reads but cannot write; an operator writes (positive control beside each denial).
    let viewer = operator_key(&app, Role::Viewer).await;
    let operator = operator_key(&app, Role::Operator).await;
    let request = || CreatePlanRequest { plan: Some(wanted.clone()), request_id: uuid::Uuid::new_v4().to_string() };
    assert_error(
        plans(&app, &viewer).create_plan(request()).await,
        Code::PermissionDenied,
        "OPERATOR_ROLE_INSUFFICIENT",
    );
    let once = request();
    let created = plans(&app, &operator).create_plan(once.clone()).await.expect("an operator creates").into_inner();
    assert_eq!(created.name, name);
    assert_eq!(created.limits.as_ref().and_then(|limits| limits.tenant_rate), Some(rate));
    assert_eq!(created.limits.as_ref().and_then(|limits| limits.max_users), Some(10));
    assert_eq!(created.limits.as_ref().and_then(|limits| limits.max_documents), None, "unset is unlimited");
    assert!(created.created_by.starts_with("operator:"));
    // Idempotent: the same request id and body replays; the name is then taken.
    let replay = plans(&app, &operator).create_plan(once).await.expect("replay").into_inner();
    assert_eq!(replay, created);
    assert_error(plans(&app, &operator).create_plan(request()).await, Code::AlreadyExists, "PLAN_NAME_ALREADY_EXISTS");

    let got = plans(&app, &viewer).get_plan(GetPlanRequest { name: name.clone() }).await.expect("viewer reads");
    assert_eq!(got.into_inner(), created);
    let listed = plans(&app, &viewer).list_plans(ListPlansRequest::default()).await.expect("list").into_inner();
    assert!(listed.plans.contains(&created));
    assert_error(
        plans(&app, &viewer).get_plan(GetPlanRequest { name: unique_slug("none") }).await,
        Code::NotFound,
        "PLAN_NOT_FOUND",
    );

    // Bad input: every violation at once, INVALID_ARGUMENT.
    let mut bad = plan_with_users("X", -1);
    bad.limits.as_mut().expect("limits").api_key_rate = Some(RequestRate { per_second: 0, burst: 1 });
    let status = plans(&app, &operator)
        .create_plan(CreatePlanRequest { plan: Some(bad), ..Default::default() })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["plan.name", "plan.limits.api_key_rate.per_second", "plan.limits.max_users"]);

    // Update with a stale etag aborts; with the current one it applies.
    let mask =
        |paths: &[&str]| Some(prost_types::FieldMask { paths: paths.iter().map(|path| (*path).into()).collect() });
    let mut change = plan_with_users(&name, 20);
    change.etag = "\"999\"".into();
    let update = |plan: Plan| UpdatePlanRequest { plan: Some(plan), update_mask: mask(&["limits"]) };
    assert_error(plans(&app, &operator).update_plan(update(change.clone())).await, Code::Aborted, "ETAG_MISMATCH");
    change.etag = created.etag.clone();
    assert_error(
        plans(&app, &viewer).update_plan(update(change.clone())).await,
        Code::PermissionDenied,
        "OPERATOR_ROLE_INSUFFICIENT",
    );
    let updated = plans(&app, &operator).update_plan(update(change)).await.expect("update").into_inner();
    assert_eq!(updated.limits.as_ref().and_then(|limits| limits.max_users), Some(20));
    assert_eq!(updated.limits.as_ref().and_then(|limits| limits.tenant_rate), None, "limits are replaced whole");
    assert_eq!(updated.settings, created.settings, "fields outside the mask stay");
    assert_ne!(updated.etag, created.etag);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_names_its_plan_and_overrides_which_get_list_and_usage_show() {
    let app = spawn_app().await;
    let name = unique_slug("silver");
    create_plan(&app, plan_with_users(&name, 3)).await;

    // An unknown plan is INVALID_ARGUMENT; a known one is accepted (positive control).
    let status = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: unique_slug("p"),
                display_name: "x".into(),
                plan: unique_slug("nope"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_error(status, Code::InvalidArgument, "PLAN_UNKNOWN");
    let overrides = PlanLimits { max_documents: Some(7), ..Default::default() };
    let tenant = create_tenant_on(&app, &name, Some(overrides.clone())).await;
    assert_eq!(tenant.plan, name);
    assert_eq!(tenant.limit_overrides, Some(overrides));
    let got = app
        .tenants
        .clone()
        .get_tenant(GetTenantRequest { selector: Some(get_tenant_request::Selector::Id(tenant.id.clone())) })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, tenant);

    // Usage shows each quota with its effective limit: the plan's, and the override.
    let usage = app
        .tenants
        .clone()
        .get_tenant_usage(GetTenantUsageRequest { tenant_id: tenant.id.clone() })
        .await
        .expect("usage")
        .into_inner();
    let limit = |quota: &str| usage.quotas.iter().find(|usage| usage.quota == quota).and_then(|usage| usage.limit);
    assert_eq!(limit("users"), Some(3));
    assert_eq!(limit("documents"), Some(7));
    assert_eq!(limit("api_keys"), None);

    // Moving the tenant off its plan removes the plan's limits; the change is audited.
    let off = app
        .tenants
        .clone()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant { id: tenant.id.clone(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["plan".into()] }),
        })
        .await
        .expect("update plan")
        .into_inner();
    assert_eq!(off.plan, "");
    let events = app
        .tenants
        .clone()
        .list_tenant_audit_events(proto::ListTenantAuditEventsRequest {
            tenant_id: tenant.id.clone(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .audit_events;
    let details = events.iter().find(|event| event.action == "tenant.update").and_then(|event| event.details.clone());
    let text = format!("{details:?}");
    assert!(text.contains("plan") && text.contains(&name), "the update names the plan it left: {text}");
    app.stop().await;
}

#[tokio::test]
async fn a_plan_change_on_one_replica_reaches_another_within_a_second() {
    let first = spawn_app().await;
    let second = start(first.database.clone(), test_config(&first.database)).await;
    second.wait_for_status("", ServingStatus::Serving).await;
    second.wait_for_status("redis", ServingStatus::Serving).await;
    let name = unique_slug("bronze");
    let plan = create_plan(&first, plan_with_users(&name, 1)).await;
    let tenant = create_tenant_on(&first, &name, None).await.id;

    // On the second replica the cap of 1 holds (and its caches are warm).
    second.users(&tenant).create_user(new_user("a@p.example")).await.expect("the first user fits");
    assert_error(
        second.users(&tenant).create_user(new_user("b@p.example")).await,
        Code::ResourceExhausted,
        "QUOTA_EXCEEDED",
    );

    let changed_at = Instant::now();
    let mut raised = plan_with_users(&name, 100);
    raised.etag = plan.etag;
    plans(&first, PLATFORM_TOKEN)
        .update_plan(UpdatePlanRequest {
            plan: Some(raised),
            update_mask: Some(prost_types::FieldMask { paths: vec!["limits".into()] }),
        })
        .await
        .expect("raise the cap through the first replica");
    let propagation = loop {
        match second.users(&tenant).create_user(new_user("b@p.example")).await {
            Ok(_) => break changed_at.elapsed(),
            Err(status) if status.code() == Code::ResourceExhausted => {}
            Err(status) => panic!("unexpected status {status:?}"),
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "the plan change did not reach the second replica within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("plan change propagated to the second replica in {propagation:?}");

    // An override changed on the first replica reaches the second too.
    let changed_at = Instant::now();
    first
        .tenants
        .clone()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                id: tenant.clone(),
                limit_overrides: Some(PlanLimits { max_users: Some(2), ..Default::default() }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["limit_overrides".into()] }),
        })
        .await
        .expect("override");
    loop {
        match second.users(&tenant).create_user(new_user(&format!("{}@p.example", uuid::Uuid::new_v4()))).await {
            Err(status) if status.code() == Code::ResourceExhausted => break,
            // Until the override arrives, the plan's cap of 100 admits more users.
            Ok(_) => {}
            Err(status) => panic!("unexpected status {status:?}"),
        }
        assert!(
            changed_at.elapsed() < Duration::from_secs(1),
            "the override did not reach the second replica within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    second.shutdown.cancel();
    second.server.await.expect("task").expect("clean stop");
    first.stop().await;
}

#[tokio::test]
async fn a_tenant_reads_its_effective_settings_and_its_own_quota_usage_over_the_data_plane() {
    use tenantd::proto::effective_setting::Source;
    use tenantd::proto::quota_service_client::QuotaServiceClient;
    use tenantd::proto::setting_service_client::SettingServiceClient;
    use tenantd::proto::{CreateSettingRequest, GetEffectiveSettingsRequest, GetQuotaUsageRequest, Setting};

    let app = spawn_app().await;
    let name = unique_slug("flags");
    let value = |kind| Some(prost_types::Value { kind: Some(kind) });
    use prost_types::value::Kind;
    let mut plan = plan_with_users(&name, 4);
    plan.settings.insert("beta".into(), value(Kind::BoolValue(false)).expect("value"));
    plan.settings.insert("max_upload_mb".into(), value(Kind::NumberValue(10.0)).expect("value"));
    let plan = create_plan(&app, plan).await;
    let tenant = create_tenant_on(&app, &name, None).await.id;
    let other = create_tenant_on(&app, "", None).await.id;
    app.settings(&tenant)
        .create_setting(CreateSettingRequest {
            setting: Some(Setting { key: "beta".into(), value: value(Kind::BoolValue(true)), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("override beta");
    app.settings(&tenant)
        .create_setting(CreateSettingRequest {
            setting: Some(Setting {
                key: "theme".into(),
                value: value(Kind::StringValue("dark".into())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("own setting");

    // With the tenant's own READ key: one call, every value with its source.
    let (_, key) = app.create_api_key(&tenant, &[crate::helpers::ApiKeyScope::Read]).await;
    let mut settings = SettingServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(&key));
    let effective =
        settings.get_effective_settings(GetEffectiveSettingsRequest {}).await.expect("effective").into_inner();
    assert_eq!(effective.plan, name);
    let seen: Vec<(String, String, i32)> = effective
        .settings
        .iter()
        .map(|setting| (setting.key.clone(), format!("{:?}", setting.value), setting.source))
        .collect();
    assert_eq!(seen.len(), 3);
    assert_eq!((seen[0].0.as_str(), seen[0].2), ("beta", Source::TenantOverride as i32));
    assert!(seen[0].1.contains("true"));
    assert_eq!((seen[1].0.as_str(), seen[1].2), ("max_upload_mb", Source::PlanDefault as i32));
    assert_eq!((seen[2].0.as_str(), seen[2].2), ("theme", Source::TenantOverride as i32));
    // Another tenant (no plan) sees none of it: positive control of isolation.
    let theirs = app.settings(&other).get_effective_settings(GetEffectiveSettingsRequest {}).await.expect("other");
    assert!(theirs.into_inner().settings.is_empty());

    // A plan default changed is seen at once.
    let mut changed = Plan { name: name.clone(), etag: plan.etag.clone(), ..Default::default() };
    changed.settings.insert("max_upload_mb".into(), value(Kind::NumberValue(50.0)).expect("value"));
    plans(&app, PLATFORM_TOKEN)
        .update_plan(UpdatePlanRequest {
            plan: Some(changed),
            update_mask: Some(prost_types::FieldMask { paths: vec!["settings".into()] }),
        })
        .await
        .expect("update defaults");
    let effective = settings.get_effective_settings(GetEffectiveSettingsRequest {}).await.expect("again").into_inner();
    let upload = effective.settings.iter().find(|setting| setting.key == "max_upload_mb").expect("default");
    assert!(format!("{:?}", upload.value).contains("50"));
    assert_eq!(effective.settings.len(), 3, "beta and theme stay the tenant's");

    // The tenant's own usage, with its READ key.
    app.create_user(&tenant, "u@e.example").await;
    let mut quotas = QuotaServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(&key));
    let usage = quotas.get_quota_usage(GetQuotaUsageRequest {}).await.expect("usage").into_inner();
    assert_eq!(usage.plan, name);
    let users = usage.quotas.iter().find(|usage| usage.quota == "users").expect("users");
    assert_eq!((users.used, users.limit), (1, Some(4)));
    let keys = usage.quotas.iter().find(|usage| usage.quota == "api_keys").expect("api keys");
    assert_eq!((keys.used, keys.limit), (1, None));
    app.stop().await;
}

/// A string field of an event's details.
fn detail(event: &proto::TenantEvent, field: &str) -> Option<String> {
    let value = event.details.as_ref()?.fields.get(field)?;
    match &value.kind {
        Some(prost_types::value::Kind::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_plan_update_and_a_tenants_change_of_plan_are_on_the_event_stream() {
    let app = spawn_app().await;
    let name = unique_slug("evplan");
    let other = unique_slug("evother");
    let created = create_plan(&app, plan_with_users(&name, 5)).await;
    create_plan(&app, plan_with_users(&other, 9)).await;
    let first = create_tenant_on(&app, &name, None).await.id;
    let second = create_tenant_on(&app, &name, None).await.id;
    let elsewhere = create_tenant_on(&app, &other, None).await.id;
    let mover = create_tenant_on(&app, "", None).await.id;
    let request = proto::WatchEventsRequest {
        event_types: vec!["plan.update".into(), "tenant.plan_change".into()],
        ..Default::default()
    };
    let mut stream = crate::events::watch(&app, Metadata::platform(), request).await.expect("watch");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut raised = created.clone();
    raised.limits = Some(PlanLimits { max_users: Some(50), ..Default::default() });
    plans(&app, PLATFORM_TOKEN)
        .update_plan(UpdatePlanRequest {
            plan: Some(raised),
            update_mask: Some(prost_types::FieldMask { paths: vec!["limits".into()] }),
        })
        .await
        .expect("update plan");
    let update_tenant = |paths: &[&str], tenant: Tenant| UpdateTenantRequest {
        tenant: Some(tenant),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|path| (*path).to_owned()).collect() }),
    };
    // Not a change of plan: a new display name, and "moving" to the plan it is on.
    let mut tenants = app.tenants.clone();
    let renamed = Tenant { id: mover.clone(), display_name: "Renamed".into(), ..Default::default() };
    tenants.update_tenant(update_tenant(&["display_name"], renamed)).await.expect("rename");
    let same = Tenant { id: elsewhere.clone(), plan: other.clone(), ..Default::default() };
    tenants.update_tenant(update_tenant(&["plan"], same)).await.expect("same plan");
    let moved = Tenant { id: mover.clone(), plan: other.clone(), ..Default::default() };
    tenants.update_tenant(update_tenant(&["plan"], moved)).await.expect("move");

    let events = crate::events::collect(&mut stream, 3).await;
    let mut updated: Vec<_> = events
        .iter()
        .filter(|event| event.event_type == "plan.update")
        .inspect(|event| {
            assert_eq!((event.resource_type.as_str(), event.resource_id.as_str()), ("plan", name.as_str()));
            assert_eq!(event.changed_fields, vec!["limits".to_owned()]);
        })
        .map(|event| event.tenant_id.clone())
        .collect();
    updated.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(updated, expected, "one plan.update per tenant on the plan, none for a tenant on another plan");
    let changes: Vec<_> = events.iter().filter(|event| event.event_type == "tenant.plan_change").collect();
    assert_eq!(changes.len(), 1, "{events:?}");
    assert_eq!(changes[0].tenant_id, mover);
    assert_eq!(detail(changes[0], "to"), Some(other.clone()));
    let late = crate::events::drain_for(&mut stream, Duration::from_millis(500)).await;
    assert!(late.is_empty(), "a rename and a move to the same plan are no change of plan: {late:?}");
    app.stop().await;
}
