//! Tenant archives (decision 0021): ExportTenant, ReadTenantArchive and ImportTenant on both
//! tiers: one snapshot while the tenant takes writes, manifest counts and hashes, no
//! secrets, the round trip (rows and data-plane answers), and tampered or truncated archives
//! refused with nothing left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use tenantd::db::archives::{ARCHIVED_TABLES, UNARCHIVED_TABLES};
use tenantd::domain::archives::format::Manifest;
use tenantd::proto::longrunning::operations_client::OperationsClient;
use tenantd::proto::longrunning::{GetOperationRequest, Operation, operation};
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::{
    self, CreateDocumentRequest, CreateSettingRequest, CreateTenantRequest, DeleteTenantRequest, Document,
    ExportTenantRequest, GetDocumentRequest, GetSettingRequest, GetTenantUsageRequest, GetUserRequest,
    ImportTenantOptions, ImportTenantRequest, ListApiKeysRequest, ListDocumentsRequest, ListSettingsRequest,
    ListTenantAuditEventsRequest, ListUsersRequest, ReadTenantArchiveRequest, Setting, Tenant, UpdateTenantRequest,
    import_tenant_request,
};
use tonic::Code;

use crate::helpers::{
    ApiKeyScope, IsolationTier, Metadata, TestApp, assert_error, connect, pg_admin, reason, spawn_app_in, unique_slug,
};

pub(crate) use crate::helpers::fast_operations as fast;

async fn spawn(tier: IsolationTier) -> TestApp {
    spawn_app_in(tier, fast).await
}

pub(crate) fn operations(
    app: &TestApp,
) -> OperationsClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Metadata>> {
    OperationsClient::with_interceptor(app.channel.clone(), Metadata::platform())
}

/// Polls until the operation is done.
pub(crate) async fn wait_done(app: &TestApp, name: &str) -> Operation {
    wait_done_within(app, name, Duration::from_secs(60)).await
}

async fn wait_done_within(app: &TestApp, name: &str, limit: Duration) -> Operation {
    let started = Instant::now();
    loop {
        let operation = operations(app)
            .get_operation(GetOperationRequest { name: name.to_owned() })
            .await
            .expect("get operation")
            .into_inner();
        if operation.done {
            return operation;
        }
        assert!(started.elapsed() < limit, "operation {name} not done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn failure(operation: &Operation) -> Option<(Code, String)> {
    match &operation.result {
        Some(operation::Result::Error(status)) => {
            let status = tonic::Status::with_details(
                Code::from_i32(status.code),
                status.message.clone(),
                prost::Message::encode_to_vec(status).into(),
            );
            Some((status.code(), reason(&status)))
        }
        _ => None,
    }
}

/// Exports a tenant and downloads its archive.
pub(crate) async fn export(app: &TestApp, tenant_id: &str) -> Vec<u8> {
    let started =
        app.tenants.clone().export_tenant(ExportTenantRequest { id: tenant_id.to_owned() }).await.expect("export");
    let done = wait_done(app, &started.get_ref().name).await;
    assert_eq!(failure(&done), None, "the export succeeds");
    download(app, &done.name).await.expect("download")
}

async fn download(app: &TestApp, name: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream =
        app.tenants.clone().read_tenant_archive(ReadTenantArchiveRequest { name: name.to_owned() }).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert_eq!(chunk.offset, bytes.len() as i64, "chunks arrive in order");
        bytes.extend_from_slice(&chunk.data);
        assert!(bytes.len() as i64 <= chunk.total_bytes);
    }
    Ok(bytes)
}

/// The messages of an upload: the options, then the archive in pieces of `piece` bytes.
pub(crate) fn import_messages(bytes: &[u8], piece: usize, options: ImportTenantOptions) -> Vec<ImportTenantRequest> {
    let mut messages = vec![ImportTenantRequest { part: Some(import_tenant_request::Part::Options(options)) }];
    messages.extend(
        bytes
            .chunks(piece)
            .map(|piece| ImportTenantRequest { part: Some(import_tenant_request::Part::Chunk(piece.to_vec())) }),
    );
    messages
}

/// Uploads an archive (in pieces of 64 KiB); `Ok` is the finished import operation.
async fn import(app: &TestApp, bytes: &[u8], options: ImportTenantOptions) -> Result<Operation, tonic::Status> {
    let messages = import_messages(bytes, 64 * 1024, options);
    let started = app.tenants.clone().import_tenant(futures_util::stream::iter(messages)).await?.into_inner();
    Ok(wait_done(app, &started.name).await)
}

/// Releases a tenant's domains and channel bindings, so that its archive imports beside it.
pub(crate) async fn release_identifiers(app: &TestApp, tenant_id: &str) {
    let released = Tenant { id: tenant_id.to_owned(), ..Default::default() };
    let mask = prost_types::FieldMask { paths: vec!["domains".into(), "channel_bindings".into()] };
    app.tenants
        .clone()
        .update_tenant(UpdateTenantRequest { tenant: Some(released), update_mask: Some(mask) })
        .await
        .expect("release identifiers");
}

pub(crate) fn imported_tenant_id(operation: &Operation) -> String {
    assert_eq!(failure(operation), None, "the import succeeds");
    let Some(operation::Result::Response(any)) = &operation.result else { panic!("no response") };
    let result: proto::OperationResult = prost::Message::decode(any.value.as_slice()).expect("result");
    match result.result.expect("struct").fields.get("tenant_id").and_then(|value| value.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(id)) => id,
        other => panic!("no tenant_id in the result: {other:?}"),
    }
}

fn manifest(bytes: &[u8]) -> Manifest {
    let end = bytes.iter().position(|byte| *byte == b'\n').expect("a manifest line");
    serde_json::from_slice(&bytes[..end]).expect("the manifest parses")
}

/// The data lines per table, as the test reads them itself.
pub(crate) fn lines_per_table(bytes: &[u8]) -> BTreeMap<String, Vec<String>> {
    let text = std::str::from_utf8(bytes).expect("utf-8");
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.split_inclusive('\n').skip(1) {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let table = value["table"].as_str().expect("table").to_owned();
        tables.entry(table).or_default().push(line.to_owned());
    }
    tables
}

/// Creates a tenant with a domain, a channel binding and labels, and gives it users,
/// documents, settings and an API key. Returns the tenant and the key's (id, secret).
pub(crate) async fn populated_tenant(app: &TestApp, tier: IsolationTier) -> (Tenant, (String, String)) {
    let slug = unique_slug("arch");
    let tenant = app
        .tenants
        .clone()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                slug: slug.clone(),
                display_name: "Archived Co".into(),
                isolation_tier: tier as i32,
                labels: [("region".to_owned(), "eu".to_owned())].into(),
                domains: vec![format!("{slug}.example.com")],
                channel_bindings: vec![proto::ChannelBinding {
                    channel_type: "slack".into(),
                    external_id: format!("T-{slug}"),
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create tenant")
        .into_inner();
    let mut owners = Vec::new();
    for n in 0..3 {
        owners.push(app.create_user(&tenant.id, &format!("user{n}@archived.example")).await);
    }
    for (n, owner) in owners.iter().enumerate().take(2) {
        let metadata = serde_json::json!({"n": n, "tags": ["a", "b"], "ratio": 1.50});
        app.documents(&tenant.id)
            .create_document(CreateDocumentRequest {
                document: Some(Document {
                    title: format!("Doc {n}"),
                    content: vec![0, 1, 2, 255, b'\n', n as u8],
                    owner_user_id: owner.id.clone(),
                    metadata: Some(json_struct(metadata)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create document");
    }
    for (key, value) in [
        ("flags.dark", prost_types::value::Kind::BoolValue(true)),
        ("limits.ratio", prost_types::value::Kind::NumberValue(0.1)),
    ] {
        app.settings(&tenant.id)
            .create_setting(CreateSettingRequest {
                setting: Some(Setting {
                    key: key.into(),
                    value: Some(prost_types::Value { kind: Some(value) }),
                    description: "restored".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create setting");
    }
    let key = app.create_api_key(&tenant.id, &[ApiKeyScope::Read]).await;
    (tenant, key)
}

fn json_struct(value: serde_json::Value) -> prost_types::Struct {
    fn convert(value: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(value) => Kind::BoolValue(value),
            serde_json::Value::Number(value) => Kind::NumberValue(value.as_f64().unwrap_or_default()),
            serde_json::Value::String(value) => Kind::StringValue(value),
            serde_json::Value::Array(values) => {
                Kind::ListValue(prost_types::ListValue { values: values.into_iter().map(convert).collect() })
            }
            serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
                fields: fields.into_iter().map(|(key, value)| (key, convert(value))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match convert(value).kind {
        Some(prost_types::value::Kind::StructValue(fields)) => fields,
        _ => prost_types::Struct::default(),
    }
}

/// What the data plane and the platform answer about a tenant's data, with the tenant's id
/// taken out so that two tenants can be compared.
async fn answers(app: &TestApp, tenant_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let users = app
        .users(tenant_id)
        .list_users(ListUsersRequest { page_size: 100, page_token: String::new() })
        .await
        .expect("list users")
        .into_inner();
    out.push(format!("{:?}", users.users));
    for user in &users.users {
        let got = app.users(tenant_id).get_user(GetUserRequest { id: user.id.clone() }).await.expect("get user");
        out.push(format!("{:?}", got.into_inner()));
    }
    let documents = app
        .documents(tenant_id)
        .list_documents(ListDocumentsRequest { page_size: 100, ..Default::default() })
        .await
        .expect("list documents")
        .into_inner();
    out.push(format!("{:?}", documents.documents));
    for document in &documents.documents {
        let got = app
            .documents(tenant_id)
            .get_document(GetDocumentRequest { id: document.id.clone() })
            .await
            .expect("get document");
        out.push(format!("{:?}", got.into_inner()));
    }
    let settings = app
        .settings(tenant_id)
        .list_settings(ListSettingsRequest { page_size: 100, page_token: String::new() })
        .await
        .expect("list settings")
        .into_inner();
    out.push(format!("{:?}", settings.settings));
    for setting in &settings.settings {
        let got = app
            .settings(tenant_id)
            .get_setting(GetSettingRequest { id: setting.id.clone() })
            .await
            .expect("get setting");
        out.push(format!("{:?}", got.into_inner()));
    }
    let keys = app
        .tenants
        .clone()
        .list_api_keys(ListApiKeysRequest {
            tenant_id: tenant_id.to_owned(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list keys")
        .into_inner();
    out.push(format!("{:?}", keys.api_keys));
    let usage = app
        .tenants
        .clone()
        .get_tenant_usage(GetTenantUsageRequest { tenant_id: tenant_id.to_owned() })
        .await
        .expect("usage")
        .into_inner();
    out.push(format!("{:?}", usage.quotas));
    out.into_iter().map(|answer| answer.replace(tenant_id, "<tenant>")).collect()
}

/// The tenant's audit events as (id, action, resource id, details).
async fn audit_events(app: &TestApp, tenant_id: &str) -> BTreeSet<String> {
    let events = app
        .tenants
        .clone()
        .list_tenant_audit_events(ListTenantAuditEventsRequest {
            tenant_id: tenant_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("audit events")
        .into_inner();
    events
        .audit_events
        .into_iter()
        .map(|event| format!("{} {} {:?}", event.id, event.action, event.details).replace(tenant_id, "<tenant>"))
        .collect()
}

/// Row counts of a tenant in every table with a tenant_id column (and its schema's), and
/// whether it has a registry row: what "nothing left behind" checks.
async fn footprint(app: &TestApp) -> (i64, i64) {
    let admin = connect(&pg_admin(), &app.database).await;
    let tenants: i64 = admin.query_one("SELECT count(*) FROM tenants", &[]).await.expect("tenants").get(0);
    let chunks: i64 = admin.query_one("SELECT count(*) FROM tenant_archive_chunks", &[]).await.expect("chunks").get(0);
    (tenants, chunks)
}

/// How a round trip removes the original before importing: returns the options to import with.
type Remove = for<'a> fn(&'a TestApp, &'a Tenant) -> BoxFuture<'a, ImportTenantOptions>;

/// Export → remove (as `remove` does) → import gives the same rows and the same answers on
/// every data-plane RPC (and the original's audit events, as history).
async fn round_trip(tier: IsolationTier, remove: Remove) {
    let app = spawn(tier).await;
    let (tenant, key) = populated_tenant(&app, tier).await;
    let before = answers(&app, &tenant.id).await;
    let history = audit_events(&app, &tenant.id).await;
    let bytes = export(&app, &tenant.id).await;
    let options = remove(&app, &tenant).await;
    // What the removal left of the original under its id (a purge: its `tenant.purge` event).
    let survivors: i64 = connect(&pg_admin(), &app.database)
        .await
        .query_one("SELECT count(*) FROM audit_events WHERE tenant_id = $1::text::uuid", &[&tenant.id])
        .await
        .expect("surviving events")
        .get(0);
    let survivors = if options.tenant_id == tenant.id { usize::try_from(survivors).expect("count") } else { 0 };
    let imported = import(&app, &bytes, options).await.expect("import");
    let new_id = imported_tenant_id(&imported);
    let restored = app
        .tenants
        .clone()
        .get_tenant(proto::GetTenantRequest { selector: Some(proto::get_tenant_request::Selector::Id(new_id.clone())) })
        .await
        .expect("get restored")
        .into_inner();
    assert_eq!(restored.state(), proto::tenant::State::Active);
    assert_eq!(restored.isolation_tier(), tier);
    assert_eq!((restored.display_name.as_str(), &restored.labels), (tenant.display_name.as_str(), &tenant.labels));
    assert_eq!(answers(&app, &new_id).await, before, "the restored tenant answers as the original did");
    let restored_history = audit_events(&app, &new_id).await;
    assert!(history.is_subset(&restored_history), "every audit event of the original is restored");
    assert_eq!(
        restored_history.len(),
        history.len() + survivors + 2,
        "and the import adds tenant.import and tenant.provision to what the removal left"
    );
    assert_same_rows(&app, &bytes, &tenant.id, &new_id).await;
    if new_id == tenant.id {
        // Restored into its own id: the keys' tokens name it, so they authenticate again.
        // After the comparison: a key's use sets its last_used_time (written in the
        // background), which the re-export would otherwise catch or miss.
        let listed =
            app.users_with_key(&key.1).list_users(ListUsersRequest { page_size: 5, page_token: String::new() }).await;
        assert_eq!(listed.expect("a restored key works").into_inner().users.len(), 3);
    }
    app.stop().await;
}

/// A new export of `new_id` has the rows of `original` (an archive of `original_id`) in every
/// table but the audit history (which the import extends), the tenant ids aside.
pub(crate) async fn assert_same_rows(app: &TestApp, original: &[u8], original_id: &str, new_id: &str) {
    let again = export(app, new_id).await;
    assert_eq!(
        lines_per_table(&again).keys().collect::<Vec<_>>(),
        lines_per_table(original).keys().collect::<Vec<_>>()
    );
    for table in ["users", "documents", "tenant_settings", "api_keys"] {
        let strip =
            |lines: &Vec<String>, id: &str| lines.iter().map(|line| line.replace(id, "<t>")).collect::<Vec<_>>();
        assert_eq!(
            strip(&lines_per_table(&again)[table], new_id),
            strip(&lines_per_table(original)[table], original_id),
            "{table}: identical rows"
        );
    }
}

/// The original is soft-deleted (after releasing its domain and channel binding); the
/// import takes a new id and a new slug (the deleted tenant keeps its own).
fn delete_original<'a>(app: &'a TestApp, tenant: &'a Tenant) -> BoxFuture<'a, ImportTenantOptions> {
    Box::pin(async move {
        let released = Tenant { id: tenant.id.clone(), ..Default::default() };
        let mask = prost_types::FieldMask { paths: vec!["domains".into(), "channel_bindings".into()] };
        app.tenants
            .clone()
            .update_tenant(UpdateTenantRequest { tenant: Some(released), update_mask: Some(mask) })
            .await
            .expect("release identifiers");
        app.tenants
            .clone()
            .delete_tenant(DeleteTenantRequest { id: tenant.id.clone(), etag: String::new() })
            .await
            .expect("delete");
        ImportTenantOptions { slug: unique_slug("back"), ..Default::default() }
    })
}

/// The original is deleted and purged (PurgeTenant, to the end: a PURGED tombstone with
/// its receipt), and the import restores into its id and slug.
fn purge_original<'a>(app: &'a TestApp, tenant: &'a Tenant) -> BoxFuture<'a, ImportTenantOptions> {
    Box::pin(async move {
        let purge = app.purge_tenant(&tenant.id).await;
        assert!(matches!(purge.result, Some(tenantd::proto::longrunning::operation::Result::Response(_))), "{purge:?}");
        let tombstone = app
            .tenants
            .clone()
            .get_tenant(proto::GetTenantRequest {
                selector: Some(proto::get_tenant_request::Selector::Id(tenant.id.clone())),
            })
            .await
            .expect("get tombstone")
            .into_inner();
        assert_eq!((tombstone.state(), tombstone.slug.as_str()), (proto::tenant::State::Purged, ""));
        ImportTenantOptions { tenant_id: tenant.id.clone(), slug: tenant.slug.clone(), ..Default::default() }
    })
}

#[tokio::test]
async fn export_then_purge_then_import_into_the_purged_id_restores_it_pooled() {
    round_trip(IsolationTier::Pooled, purge_original).await;
}

#[tokio::test]
async fn export_then_purge_then_import_into_the_purged_id_restores_it_in_the_schema_tier() {
    round_trip(IsolationTier::Schema, purge_original).await;
}

#[tokio::test]
async fn every_table_with_a_tenant_id_column_is_archived_or_named_as_not_archived() {
    let app = spawn(IsolationTier::Pooled).await;
    let admin = connect(&pg_admin(), &app.database).await;
    let catalog: BTreeSet<String> = admin
        .query(
            "SELECT table_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND column_name = 'tenant_id'",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let listed: BTreeSet<String> =
        ARCHIVED_TABLES.iter().chain(UNARCHIVED_TABLES).map(|table| (*table).to_owned()).collect();
    assert_eq!(catalog, listed);
    assert!(!catalog.is_empty(), "the catalog query finds tenant tables");
    for table in ARCHIVED_TABLES {
        let key: Vec<String> = admin
            .query(
                "SELECT a.attname::text FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                 WHERE i.indrelid = format('public.%I', $1::text)::regclass AND i.indisprimary ORDER BY a.attnum",
                &[&table],
            )
            .await
            .expect("key")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(key, ["tenant_id", "id"], "{table}: an export pages by (tenant_id, id)");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_manifest_counts_and_hashes_every_tables_lines() {
    let app = spawn(IsolationTier::Pooled).await;
    let (tenant, _) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    let manifest = manifest(&bytes);
    assert_eq!((manifest.format.as_str(), manifest.version), ("tenantd-archive", 1));
    assert_eq!(manifest.tenant_id.to_string(), tenant.id);
    assert_eq!(manifest.tenant["slug"], tenant.slug.as_str());
    assert_eq!(manifest.domains, tenant.domains);
    let lines = lines_per_table(&bytes);
    let names: Vec<&str> = manifest.tables.iter().map(|table| table.name.as_str()).collect();
    assert_eq!(names, ARCHIVED_TABLES);
    for table in &manifest.tables {
        let table_lines = lines.get(&table.name).cloned().unwrap_or_default();
        assert_eq!(table.rows, table_lines.len() as u64, "{}", table.name);
        let digest = Sha256::digest(table_lines.concat().as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(table.sha256, hex, "{}", table.name);
        assert!(!table.columns.is_empty());
    }
    let counts: BTreeMap<&str, u64> = manifest.tables.iter().map(|table| (table.name.as_str(), table.rows)).collect();
    assert_eq!((counts["users"], counts["documents"], counts["tenant_settings"], counts["api_keys"]), (3, 2, 2, 1));
    assert!(counts["audit_events"] >= 8, "the tenant's audit events are archived");
    app.stop().await;
}

#[tokio::test]
async fn an_archive_holds_no_secret_only_the_keys_id_and_hash() {
    let app = spawn(IsolationTier::Pooled).await;
    let (tenant, (key_id, secret)) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(text.contains(&key_id), "positive control: the key's row is there");
    assert!(text.contains("secret_sha256"), "with its hash");
    assert!(!text.contains(&secret), "never the secret");
    let secret_tail = secret.rsplit('_').next().unwrap_or(&secret);
    assert!(secret_tail.len() > 16 && !text.contains(secret_tail), "nor its random part");
    app.stop().await;
}

#[tokio::test]
async fn export_then_delete_then_import_gives_identical_rows_and_answers_pooled() {
    round_trip(IsolationTier::Pooled, delete_original).await;
}

#[tokio::test]
async fn export_then_delete_then_import_gives_identical_rows_and_answers_in_the_schema_tier() {
    round_trip(IsolationTier::Schema, delete_original).await;
}

/// While writers add a user and then a setting of the same number, one after the other,
/// the export sees exactly one moment: as many settings as users, or one fewer.
async fn export_is_one_snapshot(tier: IsolationTier) {
    let app = Arc::new(spawn(tier).await);
    let tenant = app.create_tenant_in(&unique_slug("snap"), tier).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop, tenant_id) = (app.clone(), stop.clone(), tenant.id.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                app.create_user(&tenant_id, &format!("w{n}@snap.example")).await;
                app.settings(&tenant_id)
                    .create_setting(CreateSettingRequest {
                        setting: Some(Setting {
                            key: format!("w.n{n}"),
                            value: Some(prost_types::Value {
                                kind: Some(prost_types::value::Kind::NumberValue(n.into())),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("create setting");
                n += 1;
            }
            n
        })
    };
    while app
        .users(&tenant.id)
        .list_users(ListUsersRequest { page_size: 5, page_token: String::new() })
        .await
        .expect("list")
        .into_inner()
        .users
        .len()
        < 5
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bytes = export(&app, &tenant.id).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    let counts: BTreeMap<String, u64> =
        manifest(&bytes).tables.iter().map(|table| (table.name.clone(), table.rows)).collect();
    let lines = lines_per_table(&bytes);
    let (users, settings) = (counts["users"], counts["tenant_settings"]);
    assert_eq!(users, lines["users"].len() as u64);
    assert!(users >= 5, "the export saw the writes before it");
    assert!(settings == users || settings + 1 == users, "one moment: {users} users, {settings} settings");
    assert!(u64::from(written) > users, "writes after the snapshot are absent ({written} written, {users} exported)");
    Arc::try_unwrap(app).ok().expect("one owner").stop().await;
}

#[tokio::test]
async fn an_export_taken_while_the_tenant_takes_writes_holds_the_rows_of_one_moment_pooled() {
    export_is_one_snapshot(IsolationTier::Pooled).await;
}

#[tokio::test]
async fn an_export_taken_while_the_tenant_takes_writes_holds_the_rows_of_one_moment_in_the_schema_tier() {
    export_is_one_snapshot(IsolationTier::Schema).await;
}

#[tokio::test]
async fn a_tampered_or_truncated_archive_is_refused_and_leaves_nothing_behind() {
    let app = spawn(IsolationTier::Pooled).await;
    let (tenant, _) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    let before = footprint(&app).await;
    let options = || ImportTenantOptions { slug: unique_slug("copy"), ..Default::default() };

    // One byte of a user's row changed.
    let mut tampered = bytes.clone();
    let at = String::from_utf8_lossy(&bytes).find("user1@archived").expect("a user's email") + 4;
    tampered[at] = b'9';
    let status = import(&app, &tampered, options()).await.expect_err("a tampered archive is refused");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "ARCHIVE_INVALID"));
    use tonic_types::StatusExt;
    let violations =
        status.get_error_details().bad_request().map(|bad| bad.field_violations.clone()).unwrap_or_default();
    assert_eq!(violations.first().map(|violation| violation.field.as_str()), Some("archive.tables[users]"));
    assert_eq!(footprint(&app).await, before, "no tenant row, no chunks left");

    // Cut short inside the data, and at a line's end.
    for cut in [bytes.len() * 2 / 3, bytes.len() - 1] {
        let status = import(&app, &bytes[..cut], options()).await.expect_err("a truncated archive is refused");
        assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "ARCHIVE_INVALID"), "cut {cut}");
        assert_eq!(footprint(&app).await, before, "cut {cut}: nothing left");
    }

    // Positive control: the untouched archive imports (its domain taken: refused, nothing left).
    let taken = import(&app, &bytes, options()).await.expect("uploaded");
    assert_eq!(failure(&taken), Some((Code::AlreadyExists, "TENANT_DOMAIN_ALREADY_EXISTS".to_owned())));
    assert_eq!(footprint(&app).await, before, "an import refused for a taken domain leaves nothing");
    release_identifiers(&app, &tenant.id).await;
    let imported = import(&app, &bytes, options()).await.expect("the untampered archive imports");
    imported_tenant_id(&imported);
    assert_eq!(footprint(&app).await, (before.0 + 1, before.1), "one more tenant; its upload is gone");
    app.stop().await;
}

#[tokio::test]
async fn reading_an_archive_that_is_unknown_or_not_finished_is_refused_and_tenant_keys_cannot_export() {
    // The worker's slow default poll: the pending export inserted below stays pending.
    let app = spawn_app_in(IsolationTier::Pooled, |_| {}).await;
    let (tenant, (_, secret)) = populated_tenant(&app, IsolationTier::Pooled).await;
    let unknown = format!("operations/{}", uuid::Uuid::now_v7());
    assert_error(
        app.tenants.clone().read_tenant_archive(ReadTenantArchiveRequest { name: unknown }).await,
        Code::NotFound,
        "ARCHIVE_NOT_FOUND",
    );
    let admin = connect(&pg_admin(), &app.database).await;
    let pending = uuid::Uuid::now_v7();
    admin
        .execute(
            "INSERT INTO operations (id, kind, subject_tenant_id, request, created_by)
             VALUES ($1::text::uuid, 'export_tenant', $2::text::uuid, '{}', 'bootstrap')",
            &[&pending.to_string(), &uuid::Uuid::now_v7().to_string()],
        )
        .await
        .expect("a pending export");
    assert_error(
        app.tenants
            .clone()
            .read_tenant_archive(ReadTenantArchiveRequest { name: format!("operations/{pending}") })
            .await,
        Code::FailedPrecondition,
        "ARCHIVE_NOT_READY",
    );
    let as_key = TenantServiceClient::with_interceptor(app.channel.clone(), Metadata::bearer(&secret));
    let denied = as_key.clone().export_tenant(ExportTenantRequest { id: tenant.id.clone() }).await;
    assert_eq!(denied.expect_err("a tenant key cannot export").code(), Code::PermissionDenied);
    assert!(!export(&app, &tenant.id).await.is_empty(), "positive control: the platform can");
    app.stop().await;
}

/// The process's resident memory (the server runs in this process), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_default();
    kib / 1024.0
}

/// Samples [`rss_mib`] until stopped; returns the peak.
fn sample_rss(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    })
}

const BENCH_LIMIT: Duration = Duration::from_secs(1800);

/// Until stopped, writes a user to `tenant_id` and waits for its event on a platform watcher
/// of that tenant, one after another; returns the longest write-to-delivery time (ms) and
/// how many were measured. What an import holds back of other tenants' events shows here.
async fn probe_event_delays(
    app: &TestApp,
    tenant_id: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(f64, usize)> {
    let request = proto::WatchEventsRequest { tenant_ids: vec![tenant_id.to_owned()], ..Default::default() };
    let mut stream = crate::events::watch(app, Metadata::platform(), request).await.expect("watch");
    let mut users = app.users(tenant_id);
    tokio::spawn(async move {
        let (mut longest, mut probes) = (0.0f64, 0);
        while !stop.load(Ordering::Relaxed) {
            let written = Instant::now();
            let user = proto::User { email: format!("probe{probes}@bench.example"), ..Default::default() };
            let created = users
                .create_user(proto::CreateUserRequest { user: Some(user), ..Default::default() })
                .await
                .expect("probe write")
                .into_inner();
            'delivered: while let Some(message) = stream.next().await {
                let message = message.expect("event");
                if message.events.iter().any(|event| event.resource_id == created.id) {
                    break 'delivered;
                }
            }
            longest = longest.max(written.elapsed().as_secs_f64() * 1000.0);
            probes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (longest, probes)
    })
}

/// One size of the benchmark: seeds a tenant with `documents` documents of 64 KiB (and 10,000
/// users), exports it to a file, imports the file; prints rates and the RSS before and peak.
async fn bench_size(app: &TestApp, documents: i64) -> String {
    let tenant = app.create_tenant_in(&unique_slug("bench"), IsolationTier::Pooled).await;
    let admin = connect(&pg_admin(), &app.database).await;
    admin
        .execute(
            "INSERT INTO users (tenant_id, id, email, role)
             SELECT $1::text::uuid, gen_random_uuid(), 'u' || n || '@bench.example', 'member'
             FROM generate_series(1, 10000) AS n",
            &[&tenant.id],
        )
        .await
        .expect("seed users");
    admin
        .execute(
            "INSERT INTO documents (tenant_id, id, title, content, content_sha256, owner_user_id)
             SELECT $1::text::uuid, gen_random_uuid(), 'doc ' || n, c, sha256(c),
                    (SELECT id FROM users WHERE tenant_id = $1::text::uuid LIMIT 1)
             FROM generate_series(1, $2::bigint) AS n,
                  LATERAL (SELECT decode(repeat(md5(n::text), 4096), 'hex') AS c) AS x",
            &[&tenant.id, &documents],
        )
        .await
        .expect("seed documents");
    let rows = 10_000.0 + documents as f64;
    let rss_before = rss_mib();

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(stop.clone());
    let started = Instant::now();
    let operation =
        app.tenants.clone().export_tenant(ExportTenantRequest { id: tenant.id.clone() }).await.expect("export");
    let done = wait_done_within(app, &operation.get_ref().name, BENCH_LIMIT).await;
    assert_eq!(failure(&done), None);
    let export_seconds = started.elapsed().as_secs_f64();
    let path = std::env::temp_dir().join(format!("tenantd-bench-{}.jsonl", tenant.id));
    let downloaded = Instant::now();
    let mut stream = app
        .tenants
        .clone()
        .read_tenant_archive(ReadTenantArchiveRequest { name: done.name.clone() })
        .await
        .expect("read")
        .into_inner();
    let mut file = std::fs::File::create(&path).expect("file");
    let mut bytes = 0usize;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        std::io::Write::write_all(&mut file, &chunk.data).expect("write");
        bytes += chunk.data.len();
    }
    let download_seconds = downloaded.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let export_peak = sampler.await.expect("sampler");

    let probe_tenant = app.create_tenant(&unique_slug("probe")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(stop.clone());
    let probe = probe_event_delays(app, &probe_tenant.id, stop.clone()).await;
    let imported = Instant::now();
    let file = std::fs::File::open(&path).expect("open");
    let options = ImportTenantOptions { slug: unique_slug("bench-copy"), ..Default::default() };
    let first = ImportTenantRequest { part: Some(import_tenant_request::Part::Options(options)) };
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0; 1024 * 1024];
        let read = std::io::Read::read(&mut file, &mut buffer).expect("read");
        buffer.truncate(read);
        (read > 0).then_some((ImportTenantRequest { part: Some(import_tenant_request::Part::Chunk(buffer)) }, file))
    });
    let upload = futures_util::StreamExt::chain(futures_util::stream::iter([first]), chunks);
    let started_import = app.tenants.clone().import_tenant(upload).await.expect("upload").into_inner();
    let upload_seconds = imported.elapsed().as_secs_f64();
    let finished = wait_done_within(app, &started_import.name, BENCH_LIMIT).await;
    imported_tenant_id(&finished);
    let import_seconds = imported.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let import_peak = sampler.await.expect("sampler");
    let (longest_event_ms, probes) = probe.await.expect("probe");
    let _ = std::fs::remove_file(&path);

    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!(
        "| {documents} docs × 64 KiB + 10,000 users ({rows} rows; archive {mib:.0} MiB) | export {export_seconds:.1} s \
         ({:.0} rows/s, {:.1} MiB/s), download {download_seconds:.1} s | import {import_seconds:.1} s incl. upload \
         {upload_seconds:.1} s ({:.0} rows/s, {:.1} MiB/s) | RSS before {rss_before:.0} MiB, peak export \
         {export_peak:.0} MiB (+{:.0}), peak import {import_peak:.0} MiB (+{:.0}) | another tenant's event during \
         the import: longest {longest_event_ms:.0} ms to delivery ({probes} writes) |",
        rows / export_seconds,
        mib / export_seconds,
        rows / import_seconds,
        mib / import_seconds,
        export_peak - rss_before,
        import_peak - rss_before,
    )
}

/// Benchmark (`cargo test --test api archives::bench_ -- --ignored --nocapture`): export and
/// import rates and the process's RSS for tenants of two sizes, side by side: RSS must not
/// grow with the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn bench_export_and_import_rates_and_rss_at_two_sizes() {
    let app = spawn_app_in(IsolationTier::Pooled, |config| {
        fast(config);
        config.limits.rpc_timeout = Duration::from_secs(3600);
    })
    .await;
    let sizes: Vec<i64> = std::env::var("TENANTD_BENCH_ARCHIVE_DOCUMENTS")
        .ok()
        .map(|text| text.split(',').filter_map(|size| size.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![800, 3200]);
    for documents in sizes {
        println!("{}", bench_size(&app, documents).await);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_archive_past_its_retention_is_not_found_and_the_sweep_deletes_its_chunks() {
    let retention = |config: &mut tenantd::config::Config| {
        fast(config);
        config.operations.archive_retention = Duration::from_secs(2);
    };
    let app = spawn_app_in(IsolationTier::Pooled, retention).await;
    let (tenant, _) = populated_tenant(&app, IsolationTier::Pooled).await;
    let started =
        app.tenants.clone().export_tenant(ExportTenantRequest { id: tenant.id.clone() }).await.expect("export");
    let done = wait_done(&app, &started.get_ref().name).await;
    assert!(!download(&app, &done.name).await.expect("within its retention").is_empty());
    let (_, chunks) = footprint(&app).await;
    assert!(chunks > 0, "positive control: the archive's chunks exist");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = download(&app, &done.name).await.expect_err("past its retention");
    assert_eq!((expired.code(), reason(&expired).as_str()), (Code::NotFound, "ARCHIVE_NOT_FOUND"));
    // A replica sweeps when it starts (and every hour).
    let mut config = crate::helpers::test_config(&app.database);
    retention(&mut config);
    let second = crate::helpers::start(app.database.clone(), config).await;
    let started = Instant::now();
    while footprint(&app).await.1 > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the sweep deletes the expired chunks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.shutdown.cancel();
    let _ = second.server.await;
    app.stop().await;
}

#[tokio::test]
async fn a_pooled_tenant_exports_without_a_provisioning_database_with_only_its_own_rows() {
    let app = spawn_app_in(IsolationTier::Pooled, |config| {
        fast(config);
        config.database.provisioning_url = None;
    })
    .await;
    let (tenant, (key_id, _)) = populated_tenant(&app, IsolationTier::Pooled).await;
    let (other, (other_key_id, _)) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    let counts: BTreeMap<String, u64> =
        manifest(&bytes).tables.iter().map(|table| (table.name.clone(), table.rows)).collect();
    assert_eq!((counts["users"], counts["documents"], counts["tenant_settings"], counts["api_keys"]), (3, 2, 2, 1));
    let text = String::from_utf8(bytes).expect("utf-8");
    assert!(text.contains(&key_id), "positive control: the tenant's own key is archived");
    assert!(
        !text.contains(&other_key_id) && !text.contains(&other.id),
        "row-level security: nothing of another tenant"
    );
    let other_bytes = export(&app, &other.id).await;
    assert!(
        String::from_utf8(other_bytes).expect("utf-8").contains(&other_key_id),
        "positive control: the other's own"
    );
    // Only the import needs the provisioning role (it writes as tenantd_owner).
    let refused = import(&app, text.as_bytes(), ImportTenantOptions::default()).await.expect_err("import refused");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::Unavailable, "SCHEMA_TIER_UNAVAILABLE"));
    app.stop().await;
}

#[tokio::test]
async fn an_upload_longer_than_the_rpc_timeout_succeeds_one_that_stalls_is_refused_and_other_calls_keep_it() {
    let timeout = Duration::from_millis(2000);
    let app = spawn_app_in(IsolationTier::Pooled, |config| {
        fast(config);
        config.limits.rpc_timeout = timeout;
    })
    .await;
    let (tenant, _) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    release_identifiers(&app, &tenant.id).await;
    let before = footprint(&app).await;
    let messages = import_messages(
        &bytes,
        bytes.len().div_ceil(6),
        ImportTenantOptions { slug: unique_slug("slow"), ..Default::default() },
    );
    assert!(messages.len() >= 6, "options and six pieces");

    // Stalled: the options and one piece, then nothing for 1.5 times the timeout.
    let stalled = futures_util::stream::iter(messages.clone()).enumerate().then(move |(n, message)| async move {
        if n == 2 {
            tokio::time::sleep(timeout * 3 / 2).await;
        }
        message
    });
    let status = app.tenants.clone().import_tenant(stalled).await.expect_err("a stalled upload is refused");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::DeadlineExceeded, "UPLOAD_STALLED"));
    assert_eq!(footprint(&app).await, before, "nothing of the stalled upload is kept");

    // Slow but steady: a message every 700 ms, past the timeout in all, within it each.
    let started = Instant::now();
    let slow = futures_util::stream::iter(messages).then(|message| async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        message
    });
    let operation = app.tenants.clone().import_tenant(slow).await.expect("a slow upload is accepted").into_inner();
    assert!(started.elapsed() > timeout * 2, "the upload outlasted the RPC timeout: {:?}", started.elapsed());
    imported_tenant_id(&wait_done(&app, &operation.name).await);
    assert_eq!(footprint(&app).await, (before.0 + 1, before.1), "one more tenant; its upload is gone");

    // Every other call keeps the timeout: an update blocked on a locked registry is cut off.
    let rename = |name: &str| UpdateTenantRequest {
        tenant: Some(Tenant { id: tenant.id.clone(), display_name: name.to_owned(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
    };
    let admin = connect(&pg_admin(), &app.database).await;
    admin.batch_execute("BEGIN; LOCK TABLE tenants IN EXCLUSIVE MODE").await.expect("lock the registry");
    let started = Instant::now();
    let status = app.tenants.clone().update_tenant(rename("Blocked")).await.expect_err("cut off at the timeout");
    assert_eq!((status.code(), status.message()), (Code::Cancelled, "Timeout expired"));
    assert!(started.elapsed() < timeout * 2, "cut off at the timeout: {:?}", started.elapsed());
    admin.batch_execute("ROLLBACK").await.expect("unlock");
    app.tenants.clone().update_tenant(rename("Unblocked")).await.expect("positive control: unblocked, it succeeds");
    app.stop().await;
}

#[tokio::test]
async fn retrying_an_import_with_its_request_id_returns_the_same_operation_and_another_archive_is_refused() {
    let app = spawn(IsolationTier::Pooled).await;
    let (tenant, _) = populated_tenant(&app, IsolationTier::Pooled).await;
    let bytes = export(&app, &tenant.id).await;
    release_identifiers(&app, &tenant.id).await;
    let target = uuid::Uuid::now_v7().to_string();
    let options = ImportTenantOptions {
        tenant_id: target.clone(),
        slug: unique_slug("once"),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let malformed = ImportTenantOptions { request_id: "not-a-uuid".into(), ..options.clone() };
    let status = import(&app, &bytes, malformed).await.expect_err("a malformed request_id");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "REQUEST_ID_MALFORMED"));

    let first = import(&app, &bytes, options.clone()).await.expect("the first import");
    assert_eq!(imported_tenant_id(&first), target);
    let imported = footprint(&app).await;
    let retried = import(&app, &bytes, options.clone()).await.expect("the retry is answered");
    assert_eq!(retried.name, first.name, "the retry returns the first operation");
    assert_eq!(footprint(&app).await, imported, "no second tenant, no upload kept");

    // Another archive under the same request_id is refused; under a new one it imports.
    app.create_user(&tenant.id, "later@archived.example").await;
    let other = export(&app, &tenant.id).await;
    assert_ne!(other, bytes);
    let exported = footprint(&app).await;
    let status = import(&app, &other, options.clone()).await.expect_err("another archive, the same request_id");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "REQUEST_ID_REUSED"));
    assert_eq!(footprint(&app).await, exported, "nothing of it is kept");
    let fresh = ImportTenantOptions {
        tenant_id: String::new(),
        slug: unique_slug("twice"),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    imported_tenant_id(&import(&app, &other, fresh).await.expect("positive control: a new request_id imports"));
    assert_eq!(footprint(&app).await, (exported.0 + 1, exported.1));
    app.stop().await;
}
