//! WatchEvents: committed mutations as a resumable stream, each tenant's events visible
//! only to the platform and that tenant's keys.

use std::collections::HashSet;
use std::time::Duration;

use prost_types::FieldMask;
use tenantd::domain::events::{Cursor, Position};
use tenantd::proto::watch_events_request::Start;
use tenantd::proto::{
    TenantEvent, UpdateTenantRequest, UpdateUserRequest, User, WatchEventsRequest, WatchEventsResponse,
};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};
use tonic_types::StatusExt;

use crate::helpers::{ApiKeyScope, Metadata, TestApp, connect, reason, spawn_app, spawn_app_with, unique_slug};

/// Opens a stream with `metadata`.
pub(crate) async fn watch(
    app: &TestApp,
    metadata: Metadata,
    request: WatchEventsRequest,
) -> Result<Streaming<WatchEventsResponse>, tonic::Status> {
    app.events_with(metadata).watch_events(request).await.map(tonic::Response::into_inner)
}

/// Reads events until `count` arrived (at most 10 s); also returns the last message cursor.
pub(crate) async fn collect(stream: &mut Streaming<WatchEventsResponse>, count: usize) -> Vec<TenantEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while events.len() < count {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived: {events:?}", events.len()))
            .expect("the stream stays open")
            .expect("a message");
        events.extend(message.events);
    }
    events
}

/// Reads events until one about `resource_id` arrived (at most 10 s).
async fn collect_until(stream: &mut Streaming<WatchEventsResponse>, resource_id: &str) -> Vec<TenantEvent> {
    let mut events: Vec<TenantEvent> = Vec::new();
    while !events.iter().any(|event| event.resource_id == resource_id) {
        let more = collect(stream, 1).await;
        events.extend(more);
    }
    events
}

/// Whatever arrives within `window`.
async fn drain_for(stream: &mut Streaming<WatchEventsResponse>, window: Duration) -> Vec<TenantEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, stream.next()).await {
        events.extend(message.events);
    }
    events
}

fn from_now() -> WatchEventsRequest {
    WatchEventsRequest::default()
}

#[tokio::test]
async fn a_platform_watcher_receives_every_committed_change_in_order_without_secrets() {
    // A short server-side RPC deadline (the other calls must still fit in it on a busy
    // machine): a stream outlives it.
    let app = spawn_app_with(|config| config.limits.rpc_timeout = Duration::from_millis(2000)).await;
    let mut stream = watch(&app, Metadata::platform(), from_now()).await.expect("watch");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let tenant = app.create_tenant(&unique_slug("ev")).await;
    app.tenants
        .clone()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(tenantd::proto::Tenant {
                id: tenant.id.clone(),
                display_name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
        })
        .await
        .expect("update tenant");
    let (key_id, secret) = app.create_api_key(&tenant.id, &[ApiKeyScope::Read, ApiKeyScope::Write]).await;
    let user = app.create_user(&tenant.id, "watched@ev.example").await;

    let events = collect(&mut stream, 4).await;
    let types: Vec<&str> = events.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(types, ["tenant.create", "tenant.update", "api_key.create", "user.create"]);
    assert!(events.iter().all(|event| event.tenant_id == tenant.id));
    assert_eq!(events[1].changed_fields, ["display_name"]);
    assert_eq!(events[2].resource_id, key_id);
    assert_eq!(events[3].resource_id, user.id);
    assert!(!format!("{events:?}").contains(&secret), "no event carries the key's secret");
    let ids: HashSet<&str> = events.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "ids are distinct");
}

#[tokio::test]
async fn a_tenant_key_never_sees_another_tenants_events() {
    let app = spawn_app().await;
    let tenant_a = app.create_tenant(&unique_slug("eva")).await;
    let tenant_b = app.create_tenant(&unique_slug("evb")).await;
    let (_, key_a) = app.create_api_key(&tenant_a.id, &[ApiKeyScope::Read]).await;

    let mut own = watch(&app, Metadata::bearer(&key_a), from_now()).await.expect("a key watches its tenant");
    let mut platform =
        watch(&app, Metadata::platform(), WatchEventsRequest { tenant_ids: vec![tenant_b.id.clone()], ..from_now() })
            .await
            .expect("the platform watches a chosen tenant");
    let user_b = app.create_user(&tenant_b.id, "b@ev.example").await;
    let user_a = app.create_user(&tenant_a.id, "a@ev.example").await;

    // Positive controls: each watcher gets its tenant's event ("now" may also include events
    // committed just before the call, such as the key's creation)...
    let seen_by_a = collect_until(&mut own, &user_a.id).await;
    let seen_by_b = collect_until(&mut platform, &user_b.id).await;
    assert!(seen_by_b.iter().all(|event| event.tenant_id == tenant_b.id), "{seen_by_b:?}");
    // ...and the key never gets B's, even later.
    let later = drain_for(&mut own, Duration::from_millis(1500)).await;
    assert!(seen_by_a.iter().chain(&later).all(|event| event.tenant_id == tenant_a.id), "{seen_by_a:?} {later:?}");

    // Naming another tenant is refused; naming its own is fine.
    let denied = watch(
        &app,
        Metadata::bearer(&key_a),
        WatchEventsRequest { tenant_ids: vec![tenant_b.id.clone()], ..from_now() },
    )
    .await
    .expect_err("another tenant");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.get_error_details().error_info().map(|info| info.reason.as_str()), Some("TENANT_MISMATCH"));
    watch(&app, Metadata::bearer(&key_a), WatchEventsRequest { tenant_ids: vec![tenant_a.id.clone()], ..from_now() })
        .await
        .expect("its own tenant");
}

#[tokio::test]
async fn resuming_from_a_cursor_yields_exactly_the_events_after_it() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("evr")).await;
    let start = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 5, nanos: 0 };
    for index in 0..24 {
        app.create_user(&tenant.id, &format!("u{index}@evr.example")).await;
    }
    let since = WatchEventsRequest {
        tenant_ids: vec![tenant.id.clone()],
        start: Some(Start::StartTime(start)),
        ..Default::default()
    };
    let mut stream = watch(&app, Metadata::platform(), since).await.expect("watch from a time");
    let all = collect(&mut stream, 25).await;
    assert_eq!(all[0].event_type, "tenant.create");
    assert_eq!(all.len(), 25, "{all:?}");

    let resume = WatchEventsRequest {
        tenant_ids: vec![tenant.id.clone()],
        start: Some(Start::Cursor(all[9].cursor.clone())),
        ..Default::default()
    };
    let mut resumed = watch(&app, Metadata::platform(), resume).await.expect("resume");
    let rest = collect(&mut resumed, 15).await;
    let expected: Vec<&str> = all[10..].iter().map(|event| event.id.as_str()).collect();
    let got: Vec<&str> = rest.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(got, expected);
    assert!(drain_for(&mut resumed, Duration::from_millis(500)).await.is_empty(), "nothing repeated");
}

#[tokio::test]
async fn filters_select_event_and_resource_types() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("evf")).await;
    let request = WatchEventsRequest {
        tenant_ids: vec![tenant.id.clone()],
        event_types: vec!["user.update".into()],
        resource_types: vec!["user".into()],
        ..Default::default()
    };
    let mut stream = watch(&app, Metadata::platform(), request).await.expect("watch");
    let user = app.create_user(&tenant.id, "f@evf.example").await;
    app.users(&tenant.id)
        .update_user(UpdateUserRequest {
            user: Some(User { id: user.id.clone(), display_name: "F".into(), ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
        })
        .await
        .expect("update user");
    let events = collect(&mut stream, 1).await;
    assert_eq!(events[0].event_type, "user.update");
    assert_eq!(events[0].changed_fields, ["display_name"]);
}

/// The reason and field violations of an error.
fn reason_and_fields(status: &tonic::Status) -> (String, Vec<String>) {
    let details = status.get_error_details();
    let reason = details.error_info().map(|info| info.reason.clone()).unwrap_or_default();
    let fields = details
        .bad_request()
        .map(|bad| bad.field_violations.iter().map(|violation| violation.field.clone()).collect())
        .unwrap_or_default();
    (reason, fields)
}

#[tokio::test]
async fn bad_cursors_and_filters_are_invalid_argument_and_old_ones_beyond_retention() {
    let app = spawn_app_with(|config| config.events.retention = Duration::from_secs(3600)).await;
    let bad = |start| WatchEventsRequest { start: Some(start), ..Default::default() };

    for cursor in ["not-a-cursor", "", "AAAA"] {
        let error =
            watch(&app, Metadata::platform(), bad(Start::Cursor(cursor.into()))).await.expect_err("a bad cursor");
        assert_eq!(error.code(), Code::InvalidArgument, "{cursor:?}");
        assert_eq!(reason_and_fields(&error), ("EVENT_CURSOR_INVALID".into(), vec!["cursor".into()]));
    }
    let filter = WatchEventsRequest { event_types: vec!["User Create".into()], ..Default::default() };
    let error = watch(&app, Metadata::platform(), filter).await.expect_err("a bad filter");
    assert_eq!(reason_and_fields(&error), ("EVENT_FILTER_INVALID".into(), vec!["event_types[0]".into()]));

    let position = Position::before_transaction(1);
    let old = Cursor { position, time: chrono::Utc::now() - chrono::Duration::hours(2) };
    let error = watch(&app, Metadata::platform(), bad(Start::Cursor(old.encode()))).await.expect_err("too old");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason_and_fields(&error).0, "EVENT_RETENTION_EXCEEDED");
    let old_time = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 7200, nanos: 0 };
    let error = watch(&app, Metadata::platform(), bad(Start::StartTime(old_time))).await.expect_err("too old");
    assert_eq!(reason_and_fields(&error).0, "EVENT_RETENTION_EXCEEDED");
    let ahead = Cursor { position: Position::before_transaction(i64::MAX / 2), time: chrono::Utc::now() };
    let error = watch(&app, Metadata::platform(), bad(Start::Cursor(ahead.encode()))).await.expect_err("ahead");
    assert_eq!(reason_and_fields(&error), ("EVENT_CURSOR_INVALID".into(), vec!["cursor".into()]));

    // Control: a recent cursor is accepted.
    let recent = Cursor { position, time: chrono::Utc::now() };
    watch(&app, Metadata::platform(), bad(Start::Cursor(recent.encode()))).await.expect("a recent cursor");
}

/// Appends `count` events with large details to a tenant, directly (as the superuser).
async fn append_events(app: &TestApp, tenant_id: &str, count: i64) {
    let admin = connect(&crate::helpers::pg_admin(), &app.database).await;
    admin
        .execute(
            "INSERT INTO audit_events (tenant_id, id, actor_type, action, resource_type, resource_id, request_id, details)
             SELECT $1::text::uuid, gen_random_uuid(), 'platform', 'document.update', 'document', g::text, 'bulk',
                    jsonb_build_object('padding', repeat('x', 2000))
             FROM generate_series(1, $2::bigint) AS g",
            &[&tenant_id, &count],
        )
        .await
        .expect("append events");
}

const TOTAL: i64 = 8000;
const TOTAL_EVENTS: usize = 8000;

#[tokio::test]
async fn a_stalled_watcher_is_ended_with_a_resume_cursor_and_resumes_without_loss() {
    let app = spawn_app_with(|config| {
        config.events.watcher_buffer = 2;
        config.events.slow_watcher_timeout = Duration::from_millis(300);
    })
    .await;
    let tenant = app.create_tenant(&unique_slug("evs")).await;
    let only = || WatchEventsRequest { tenant_ids: vec![tenant.id.clone()], ..Default::default() };
    let mut stream = watch(&app, Metadata::platform(), only()).await.expect("watch");
    // Far more than the buffer and the transport's windows hold (HTTP/2 lets the client
    // take 2 MB per stream unread): 8,000 × 2 kB.
    append_events(&app, &tenant.id, TOTAL).await;
    // The server gives up on the stalled watcher: its place at the hub is released.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.events.watchers() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the stalled watcher was never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stalled client now reads: what was buffered, then the error.
    let mut delivered = Vec::new();
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("the stream ends") {
            Some(Ok(message)) => delivered.extend(message.events),
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error after {} events", delivered.len()),
        }
    };
    assert_eq!(error.code(), Code::ResourceExhausted);
    let info = error.get_error_details().error_info().cloned().expect("error info");
    assert_eq!(info.reason, "WATCHER_TOO_SLOW");
    let resume = info.metadata.get("resume_cursor").cloned().expect("a resume cursor");
    assert!(delivered.len() < TOTAL_EVENTS, "the stream was cut short: {}", delivered.len());

    let mut resumed =
        watch(&app, Metadata::platform(), WatchEventsRequest { start: Some(Start::Cursor(resume)), ..only() })
            .await
            .expect("resume");
    let rest = collect(&mut resumed, TOTAL_EVENTS - delivered.len()).await;
    let ids: HashSet<String> = delivered.iter().chain(&rest).map(|event| event.id.clone()).collect();
    assert_eq!(ids.len(), TOTAL_EVENTS, "nothing lost, nothing repeated");
    assert_eq!(delivered.len() + rest.len(), TOTAL_EVENTS);
}

#[tokio::test]
async fn a_cancelled_watch_releases_its_place() {
    let app = spawn_app().await;
    let streams: Vec<_> =
        futures_util::future::join_all((0..20).map(|_| watch(&app, Metadata::platform(), from_now())))
            .await
            .into_iter()
            .map(|stream| stream.expect("watch"))
            .collect();
    assert_eq!(app.events.watchers(), 20, "control: every watcher is registered");
    drop(streams);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.events.watchers() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "{} watchers remain", app.events.watchers());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A client deadline ends a stream too.
    let mut request = tonic::Request::new(from_now());
    request.set_timeout(Duration::from_millis(300));
    let mut stream = app.events_with(Metadata::platform()).watch_events(request).await.expect("watch").into_inner();
    assert_eq!(app.events.watchers(), 1);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends at its deadline");
    let status = ended.expect("with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.events.watchers() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the deadline did not free the watcher");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the stream until it ends with an error (at most 5 s), collecting events.
async fn until_ended(stream: &mut Streaming<WatchEventsResponse>) -> (Vec<TenantEvent>, tonic::Status) {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await.expect("the stream ends within 5 s") {
            Some(Ok(message)) => events.extend(message.events),
            Some(Err(status)) => return (events, status),
            None => panic!("the stream ended without an error"),
        }
    }
}

/// The resume cursor an ending carries.
fn resume_cursor(status: &tonic::Status) -> String {
    let info = status.get_error_details().error_info().cloned().expect("error info");
    info.metadata.get("resume_cursor").cloned().expect("a resume cursor")
}

#[tokio::test]
async fn an_open_stream_ends_when_its_key_is_revoked_or_its_tenant_suspended() {
    let app = spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("evr")).await;
    let (revoked_id, revoked) = app.create_api_key(&tenant.id, &[ApiKeyScope::Read]).await;
    let (_, kept) = app.create_api_key(&tenant.id, &[ApiKeyScope::Read]).await;
    let mut doomed = watch(&app, Metadata::bearer(&revoked), from_now()).await.expect("watch");
    let mut surviving = watch(&app, Metadata::bearer(&kept), from_now()).await.expect("watch");
    // Positive control: both streams deliver while their keys are good.
    let user = app.create_user(&tenant.id, "before@evr.example").await;
    collect_until(&mut doomed, &user.id).await;
    collect_until(&mut surviving, &user.id).await;

    app.tenants
        .clone()
        .revoke_api_key(tenantd::proto::RevokeApiKeyRequest { tenant_id: tenant.id.clone(), id: revoked_id })
        .await
        .expect("revoke");
    let (_, ended) = until_ended(&mut doomed).await;
    assert_eq!((ended.code(), reason(&ended)), (Code::Unauthenticated, "API_KEY_REVOKED".to_owned()));
    let resume = resume_cursor(&ended);
    // The other key's stream goes on.
    let after = app.create_user(&tenant.id, "after@evr.example").await;
    collect_until(&mut surviving, &after.id).await;
    // The revoked key cannot reopen it, from its resume cursor or otherwise.
    let reopened = watch(
        &app,
        Metadata::bearer(&revoked),
        WatchEventsRequest { start: Some(Start::Cursor(resume)), ..from_now() },
    )
    .await
    .expect_err("a revoked key");
    assert_eq!(reason(&reopened), "API_KEY_REVOKED");

    // Suspending the tenant ends the remaining key's stream; a platform watcher of the
    // tenant is not a tenant credential, and goes on to see the suspension.
    let only = WatchEventsRequest { tenant_ids: vec![tenant.id.clone()], ..from_now() };
    let mut platform = watch(&app, Metadata::platform(), only).await.expect("watch");
    app.tenants
        .clone()
        .suspend_tenant(tenantd::proto::SuspendTenantRequest { id: tenant.id.clone(), etag: String::new() })
        .await
        .expect("suspend");
    let (_, ended) = until_ended(&mut surviving).await;
    assert_eq!((ended.code(), reason(&ended)), (Code::FailedPrecondition, "TENANT_SUSPENDED".to_owned()));
    let seen = collect(&mut platform, 1).await;
    assert_eq!(seen[0].event_type, "tenant.suspend");
}

#[tokio::test]
async fn an_open_stream_ends_when_its_operator_is_revoked() {
    let app = spawn_app().await;
    let (operator_id, key) =
        crate::operators::create_operator(&app, "watcher", tenantd::proto::operator::Role::Viewer).await;
    let (_, other_key) = crate::operators::create_operator(&app, "other", tenantd::proto::operator::Role::Viewer).await;
    let mut doomed = watch(&app, Metadata::bearer(&key), from_now()).await.expect("watch");
    let mut surviving = watch(&app, Metadata::bearer(&other_key), from_now()).await.expect("watch");
    let tenant = app.create_tenant(&unique_slug("evo")).await;
    collect_until(&mut doomed, &tenant.id).await;
    collect_until(&mut surviving, &tenant.id).await;

    tenantd::proto::operator_service_client::OperatorServiceClient::with_interceptor(
        app.channel.clone(),
        Metadata::platform(),
    )
    .revoke_operator(tenantd::proto::RevokeOperatorRequest { id: operator_id })
    .await
    .expect("revoke");
    let (_, ended) = until_ended(&mut doomed).await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let second = app.create_tenant(&unique_slug("evo")).await;
    collect_until(&mut surviving, &second.id).await;
}

#[tokio::test]
async fn watching_a_tenant_that_does_not_exist_is_not_found() {
    let app = spawn_app().await;
    let known = app.create_tenant(&unique_slug("evn")).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    // Control: a known tenant is watched.
    watch(&app, Metadata::platform(), WatchEventsRequest { tenant_ids: vec![known.id.clone()], ..from_now() })
        .await
        .expect("a known tenant");
    let error = watch(
        &app,
        Metadata::platform(),
        WatchEventsRequest { tenant_ids: vec![known.id.clone(), unknown.clone()], ..from_now() },
    )
    .await
    .expect_err("an unknown tenant");
    assert_eq!((error.code(), reason(&error)), (Code::NotFound, "TENANT_NOT_FOUND".to_owned()));
    let info = error.get_error_details().error_info().cloned().expect("error info");
    assert_eq!(info.metadata.get("tenant_id"), Some(&unknown), "the error names the unknown id");
}

#[tokio::test]
async fn the_event_index_names_exactly_the_tenants_whose_committed_transactions_wrote_events() {
    let app = spawn_app().await;
    let writer = app.create_tenant(&unique_slug("writer")).await;
    let quiet = app.create_tenant(&unique_slug("quiet")).await;
    let app_role = connect("tenantd_app", &app.database).await;
    let admin = connect(&crate::helpers::pg_admin(), &app.database).await;
    let indexed = async |transaction_id: i64| -> Vec<String> {
        admin
            .query(
                "SELECT tenant_id::text FROM event_transactions WHERE transaction_id = $1 ORDER BY 1",
                &[&transaction_id],
            )
            .await
            .expect("event index")
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    // One transaction's events for one tenant, committed or rolled back; returns its id.
    let write_events = async |tenant_id: &str, commit: bool| -> i64 {
        app_role.batch_execute("BEGIN").await.expect("begin");
        app_role.batch_execute(&format!("SET LOCAL app.tenant_id = '{tenant_id}'")).await.expect("tenant");
        for _ in 0..2 {
            app_role
                .execute(
                    "INSERT INTO audit_events (tenant_id, id, actor_type, action, resource_type, resource_id, request_id)
                     VALUES ($1::text::uuid, gen_random_uuid(), 'platform', 'user.update', 'user', 'u', 'r')",
                    &[&tenant_id],
                )
                .await
                .expect("event");
        }
        let transaction_id: i64 =
            app_role.query_one("SELECT pg_current_xact_id()::text::bigint", &[]).await.expect("transaction id").get(0);
        app_role.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" }).await.expect("end");
        transaction_id
    };

    // Positive control: a committed transaction's events name their tenant, once.
    let committed = write_events(&writer.id, true).await;
    assert_eq!(indexed(committed).await, std::slice::from_ref(&writer.id));
    // A rolled-back one leaves nothing, and the quiet tenant is never named.
    let rolled_back = write_events(&quiet.id, false).await;
    assert_eq!(indexed(rolled_back).await, Vec::<String>::new());
    let quiet_rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM event_transactions WHERE tenant_id = $1::text::uuid AND transaction_id >= $2",
            &[&quiet.id, &committed],
        )
        .await
        .expect("quiet tenant")
        .get(0);
    assert_eq!(quiet_rows, 0);

    // A platform watcher still receives the writer's events through the index.
    let mut stream = watch(&app, Metadata::platform(), from_now()).await.expect("watch");
    let user = app.create_user(&writer.id, "indexed@example.com").await;
    let events = collect(&mut stream, 1).await;
    assert!(events.iter().any(|event| event.resource_id == user.id && event.tenant_id == writer.id), "{events:?}");
    app.stop().await;
}
