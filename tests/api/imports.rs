//! ImportTenant in short transactions (decision 0021, "Import: verified upload, then short
//! transactions"), on both tiers: while an
//! import is held part-way, with some of its rows committed, the tenant is PROVISIONING and
//! refused, other tenants' events still flow, a killed replica's import is finished by
//! another with the same rows, and a cancelled one leaves nothing of what it wrote.

use std::time::{Duration, Instant};

use tenantd::db::tenant_schema::schema_name;
use tenantd::proto::longrunning::CancelOperationRequest;
use tenantd::proto::{
    self, GetPurgeReceiptRequest, GetTenantRequest, ImportTenantOptions, ListUsersRequest, Tenant, get_tenant_request,
    tenant,
};
use tonic::Code;
use uuid::Uuid;

use crate::archives::{
    assert_same_rows, export, failure, fast, import_messages, imported_tenant_id, operations, populated_tenant,
    release_identifiers, wait_done,
};
use crate::events::{collect, watch};
use crate::helpers::{
    IsolationTier, Metadata, TestApp, assert_error, connect, operation_metadata, pg_admin, reason, replica,
    spawn_app_in, unique_slug,
};
use crate::purge::{rows_everywhere, schema_exists};

/// Where a held import writes.
#[derive(Clone, Copy, PartialEq)]
enum Into {
    /// A new id, beside the original.
    NewId,
    /// The original's id, after the original was purged (a restore of its tombstone).
    PurgedOriginal,
}

/// An import of a populated tenant's archive, held part-way: its users, documents and
/// settings are committed and its API keys wait on a lock that a superuser transaction
/// (`lock`) holds on `api_keys` (a shared table on both tiers, archived after the others).
struct HeldImport {
    original: Tenant,
    archive: Vec<u8>,
    operation: String,
    tenant_id: String,
    slug: String,
    lock: tokio_postgres::Client,
}

impl HeldImport {
    async fn start(app: &TestApp, into: Into) -> Self {
        let (original, _key) = populated_tenant(app, app.tier).await;
        let archive = export(app, &original.id).await;
        let options = match into {
            Into::NewId => {
                release_identifiers(app, &original.id).await;
                let id = Uuid::now_v7().to_string();
                ImportTenantOptions { tenant_id: id, slug: unique_slug("held"), ..Default::default() }
            }
            Into::PurgedOriginal => {
                app.purge_tenant(&original.id).await;
                ImportTenantOptions {
                    tenant_id: original.id.clone(),
                    slug: original.slug.clone(),
                    ..Default::default()
                }
            }
        };
        let (tenant_id, slug) = (options.tenant_id.clone(), options.slug.clone());
        let lock = connect(&pg_admin(), &app.database).await;
        lock.batch_execute("BEGIN; LOCK TABLE api_keys IN SHARE MODE").await.expect("lock api_keys");
        let messages = import_messages(&archive, 64 * 1024, options);
        let operation =
            app.tenants.clone().import_tenant(futures_util::stream::iter(messages)).await.expect("import").into_inner();
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = connect(&pg_admin(), &app.database).await;
        loop {
            let waiting: i64 = admin
                .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'api_keys'::regclass", &[])
                .await
                .expect("locks")
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the import never reached the API keys");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { original, archive, operation: operation.name, tenant_id, slug, lock }
    }

    /// Lets the import go on.
    async fn release(&self) {
        self.lock.batch_execute("ROLLBACK").await.expect("unlock api_keys");
    }
}

async fn tenant(app: &TestApp, id: &str) -> Result<Tenant, tonic::Status> {
    let selector = Some(get_tenant_request::Selector::Id(id.to_owned()));
    app.tenants.clone().get_tenant(GetTenantRequest { selector }).await.map(tonic::Response::into_inner)
}

/// The users of `tenant_id`, on either tier (counted as the superuser).
async fn users_of(database: &str, tenant_id: &str) -> i64 {
    let admin = connect(&pg_admin(), database).await;
    let schema = schema_name(Uuid::parse_str(tenant_id).expect("uuid"));
    let in_schema: bool = admin
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("{schema}.users")])
        .await
        .expect("schema table")
        .get(0);
    let table = if in_schema { format!("{schema}.users") } else { "public.users".to_owned() };
    admin
        .query_one(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1::text::uuid"), &[&tenant_id])
        .await
        .expect("count users")
        .get(0)
}

#[tokio::test]
async fn while_an_import_is_held_part_way_its_tenant_is_provisioning_and_other_tenants_events_flow() {
    let app = spawn_app_in(IsolationTier::Pooled, fast).await;
    let other = app.create_tenant(&unique_slug("busy")).await;
    let request = proto::WatchEventsRequest { tenant_ids: vec![other.id.clone()], ..Default::default() };
    let mut stream = watch(&app, Metadata::platform(), request).await.expect("watch");
    let held = HeldImport::start(&app, Into::NewId).await;

    assert_eq!(users_of(&app.database, &held.tenant_id).await, 3, "the users' batch is committed");
    let provisioning = tenant(&app, &held.tenant_id).await.expect("the tenant is visible");
    assert_eq!(provisioning.state(), tenant::State::Provisioning);
    let refused = app.users(&held.tenant_id).list_users(ListUsersRequest::default()).await;
    assert_error(refused, Code::Unavailable, "TENANT_PROVISIONING");

    // Another tenant's write is delivered while the import is still held: no transaction
    // of the import is open across it (one transaction for the whole import would hold
    // every event behind its snapshot until it committed).
    let user = app.create_user(&other.id, "busy@imports.example").await;
    let events = collect(&mut stream, 1).await;
    assert!(events.iter().any(|event| event.resource_id == user.id), "{events:?}");
    assert_eq!(tenant(&app, &held.tenant_id).await.expect("tenant").state(), tenant::State::Provisioning, "still held");

    held.release().await;
    let done = wait_done(&app, &held.operation).await;
    assert_eq!(imported_tenant_id(&done), held.tenant_id);
    assert_eq!(tenant(&app, &held.tenant_id).await.expect("tenant").state(), tenant::State::Active);
    let listed = app.users(&held.tenant_id).list_users(ListUsersRequest::default()).await.expect("served");
    assert_eq!(listed.into_inner().users.len(), 3);
    assert_same_rows(&app, &held.archive, &held.original.id, &held.tenant_id).await;
    app.stop().await;
}

#[tokio::test]
async fn a_replica_killed_mid_import_leaves_it_provisioning_and_another_finishes_it_with_the_same_rows() {
    a_killed_import_is_finished_by_another_replica(IsolationTier::Pooled).await;
}

async fn a_killed_import_is_finished_by_another_replica(tier: IsolationTier) {
    let app = spawn_app_in(tier, fast).await;
    let held = HeldImport::start(&app, Into::NewId).await;
    let HeldImport { original, archive, operation, tenant_id, lock, .. } = held;
    let database = app.kill().await;
    // The killed replica's connections are closed: what it left uncommitted rolls back
    // once the lock is released; its committed batch stays.
    lock.batch_execute("ROLLBACK").await.expect("unlock api_keys");
    assert_eq!(users_of(&database, &tenant_id).await, 3, "the committed batch survived the kill");

    let replica = replica(database, fast).await;
    let done = wait_done(&replica, &operation).await;
    assert_eq!(imported_tenant_id(&done), tenant_id);
    let attempts = operation_metadata(&done).attempts;
    assert!(attempts >= 2, "resumed by another claim: {attempts}");
    assert_eq!(tenant(&replica, &tenant_id).await.expect("tenant").state(), tenant::State::Active);
    assert_eq!(users_of(&replica.database, &tenant_id).await, 3, "each row once");
    assert_same_rows(&replica, &archive, &original.id, &tenant_id).await;
    replica.stop().await;
}

async fn a_cancelled_import_removes_what_it_wrote(tier: IsolationTier, into: Into) {
    let app = spawn_app_in(tier, fast).await;
    let held = HeldImport::start(&app, into).await;
    // Positive control: the import had written part of the tenant.
    assert_eq!(users_of(&app.database, &held.tenant_id).await, 3);
    assert_eq!(schema_exists(&app, &held.tenant_id).await, tier == IsolationTier::Schema);
    operations(&app).cancel_operation(CancelOperationRequest { name: held.operation.clone() }).await.expect("cancel");
    held.release().await;
    let done = wait_done(&app, &held.operation).await;
    assert_eq!(failure(&done).map(|(code, _)| code), Some(Code::Cancelled), "{done:?}");

    let left = rows_everywhere(&app, &held.tenant_id).await;
    assert!(!schema_exists(&app, &held.tenant_id).await, "no schema is left");
    match into {
        Into::NewId => {
            assert!(left.is_empty(), "no row of the import is left: {left:?}");
            let gone = tenant(&app, &held.tenant_id).await.expect_err("no tenant");
            assert_eq!((gone.code(), reason(&gone)), (Code::NotFound, "TENANT_NOT_FOUND".to_owned()));
            // Its slug is free again.
            app.create_tenant(&held.slug).await;
        }
        Into::PurgedOriginal => {
            let tombstone = tenant(&app, &held.tenant_id).await.expect("the tombstone is back");
            assert_eq!((tombstone.state(), tombstone.slug.as_str()), (tenant::State::Purged, ""));
            assert!(tombstone.purge_time.is_some() && tombstone.delete_time.is_some(), "{tombstone:?}");
            let kept: Vec<&String> = left.keys().collect();
            assert_eq!(kept, ["public.audit_events", "public.event_transactions"], "only the purge's event: {left:?}");
            app.tenants
                .clone()
                .get_purge_receipt(GetPurgeReceiptRequest { tenant_id: held.tenant_id.clone() })
                .await
                .expect("the purge receipt is still there");
        }
    }
    // The original's rows are untouched (a new id) or were purged before (its tombstone).
    if into == Into::NewId {
        assert_eq!(users_of(&app.database, &held.original.id).await, 3);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_import_into_a_new_id_leaves_no_tenant_and_no_row() {
    a_cancelled_import_removes_what_it_wrote(IsolationTier::Pooled, Into::NewId).await;
}

#[tokio::test]
async fn a_cancelled_import_into_a_new_id_in_the_schema_tier_leaves_no_tenant_no_row_and_no_schema() {
    a_cancelled_import_removes_what_it_wrote(IsolationTier::Schema, Into::NewId).await;
}

#[tokio::test]
async fn a_cancelled_import_into_a_purged_id_puts_the_tombstone_back_as_it_was() {
    a_cancelled_import_removes_what_it_wrote(IsolationTier::Pooled, Into::PurgedOriginal).await;
}

#[tokio::test]
async fn a_replica_killed_mid_import_in_the_schema_tier_leaves_it_to_another_that_finishes_it() {
    a_killed_import_is_finished_by_another_replica(IsolationTier::Schema).await;
}
