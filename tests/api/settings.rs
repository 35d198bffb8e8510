//! Tenant settings, the first resource built with the resource kit: CRUD, paging, audit,
//! exactly-once creates, typed values and isolation, over gRPC against real PostgreSQL.

use prost_types::value::Kind;
use prost_types::{FieldMask, Value};
use tenantd::proto::{
    CreateSettingRequest, DeleteSettingRequest, GetSettingRequest, ListAuditEventsRequest, ListSettingsRequest,
    Setting, UpdateSettingRequest,
};
use tonic::Code;

use super::helpers::{Metadata, TestApp, assert_error, assert_isolated, spawn_app, unique_slug};

fn value(kind: Kind) -> Option<Value> {
    Some(Value { kind: Some(kind) })
}

fn setting(key: &str, kind: Kind) -> Setting {
    Setting { key: key.into(), value: value(kind), description: "for tests".into(), ..Default::default() }
}

async fn create(app: &TestApp, tenant: &str, setting: Setting, request_id: &str) -> Result<Setting, tonic::Status> {
    let request = CreateSettingRequest { setting: Some(setting), request_id: request_id.into() };
    app.settings(tenant).create_setting(request).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_setting_goes_through_create_get_update_and_delete_with_its_type_kept() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("settings")).await.id;
    let mut settings = app.settings(&tenant);
    let flag = create(&app, &tenant, setting("beta.checkout", Kind::BoolValue(true)), "").await.expect("create");
    let limit = create(&app, &tenant, setting("max_seats", Kind::NumberValue(25.0)), "").await.expect("create");
    let got = settings.get_setting(GetSettingRequest { id: flag.id.clone() }).await.expect("get").into_inner();
    assert_eq!(got, flag);
    assert_eq!(got.value, value(Kind::BoolValue(true)), "a flag stays a flag");

    let changed = Setting { value: value(Kind::StringValue("on".into())), ..limit.clone() };
    let update = |setting: Setting, paths: &[&str]| UpdateSettingRequest {
        setting: Some(setting),
        update_mask: Some(FieldMask { paths: paths.iter().map(|path| (*path).to_owned()).collect() }),
    };
    let updated = settings.update_setting(update(changed.clone(), &["value"])).await.expect("update").into_inner();
    assert_eq!((updated.value.clone(), updated.key.as_str()), (value(Kind::StringValue("on".into())), "max_seats"));
    assert_ne!(updated.etag, limit.etag);
    let stale = settings.update_setting(update(changed, &["value"])).await;
    assert_error(stale, Code::Aborted, "ETAG_MISMATCH");

    let taken = create(&app, &tenant, setting("max_seats", Kind::NumberValue(1.0)), "").await;
    assert_error(taken.map(tonic::Response::new), Code::AlreadyExists, "SETTING_KEY_ALREADY_EXISTS");
    let delete = DeleteSettingRequest { id: updated.id.clone(), etag: updated.etag.clone() };
    settings.delete_setting(delete).await.expect("delete");
    assert_error(settings.get_setting(GetSettingRequest { id: updated.id }).await, Code::NotFound, "SETTING_NOT_FOUND");

    let audit = app.audit_with(Metadata::platform().tenant_id(&tenant));
    let events = audit.clone().list_audit_events(ListAuditEventsRequest::default()).await.expect("audit").into_inner();
    let actions: Vec<&str> = events
        .audit_events
        .iter()
        .filter(|event| event.resource_type == "setting")
        .map(|event| event.action.as_str())
        .collect();
    assert_eq!(
        actions,
        ["setting.delete", "setting.update", "setting.create", "setting.create"],
        "one event per mutation"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_settings_get_every_field_violation_at_once_and_never_internal() {
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("settings")).await.id;
    create(&app, &tenant, setting("ok", Kind::BoolValue(false)), "").await.expect("control: a valid setting");
    let list = Kind::ListValue(prost_types::ListValue::default());
    let bad =
        Setting { key: "Not A Key".into(), value: value(list), description: "x".repeat(501), ..Default::default() };
    let refused = create(&app, &tenant, bad, "").await.expect_err("three invalid fields");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_error_details()
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["setting.key", "setting.value", "setting.description"]);
    let missing = Setting { key: "no_value".into(), ..Default::default() };
    assert_error(
        create(&app, &tenant, missing, "").await.map(tonic::Response::new),
        Code::InvalidArgument,
        "FIELD_REQUIRED",
    );
    let empty_mask = UpdateSettingRequest { setting: Some(Setting::default()), update_mask: None };
    let no_mask = app.settings(&tenant).update_setting(empty_mask).await;
    assert_error(no_mask, Code::InvalidArgument, "UPDATE_MASK_REQUIRED");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_creates_one_setting() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("settings")).await.id;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first = create(&app, &tenant, setting("retried", Kind::NumberValue(1.0)), &request_id).await.expect("first");
    let again = create(&app, &tenant, setting("retried", Kind::NumberValue(1.0)), &request_id).await.expect("replay");
    assert_eq!(first, again, "the replay returns the first response");
    let other_body = create(&app, &tenant, setting("retried", Kind::NumberValue(2.0)), &request_id).await;
    assert_error(other_body.map(tonic::Response::new), Code::InvalidArgument, "REQUEST_ID_REUSED");
    let listed = app.settings(&tenant).list_settings(ListSettingsRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed.settings.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn paging_through_settings_yields_each_exactly_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("settings")).await.id;
    for index in 0..7 {
        create(&app, &tenant, setting(&format!("key{index}"), Kind::NumberValue(f64::from(index))), "")
            .await
            .expect("create");
    }
    let (mut seen, mut token) = (Vec::new(), String::new());
    loop {
        let request = ListSettingsRequest { page_size: 3, page_token: token };
        let page = app.settings(&tenant).list_settings(request).await.expect("page").into_inner();
        assert!(page.settings.len() <= 3);
        seen.extend(page.settings.into_iter().map(|setting| setting.key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (0..7).map(|index| format!("key{index}")).collect::<Vec<_>>());
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_cannot_see_or_delete_another_tenants_setting() {
    let app = spawn_app().await;
    assert_isolated(
        &app,
        "SETTING_NOT_FOUND",
        async |tenant| {
            create(&app, &tenant, setting("secret_flag", Kind::BoolValue(true)), "").await.expect("create").id
        },
        async |tenant, id| app.settings(&tenant).get_setting(GetSettingRequest { id }).await.map(drop),
        async |tenant, id| {
            app.settings(&tenant).delete_setting(DeleteSettingRequest { id, etag: String::new() }).await.map(drop)
        },
    )
    .await;
    app.stop().await;
}
