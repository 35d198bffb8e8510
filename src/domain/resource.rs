//! The resource kit: the steps every tenant-scoped resource shares, written once
//! (`docs/adding-a-resource.md`). A resource implements [`Resource`] over a
//! [`Repository`]; [`Resources`] then creates (exactly once per request id, audited),
//! gets, lists (cursor pages), updates (etag check, changed fields audited) and deletes.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::idempotency::{self, RequestKey};
use super::page::{self, PageToken, fingerprint};
use super::quotas::{self, Quota, QuotaScope};
use super::{audit, check_etag};
use crate::db::resource::{Patch, Repository};
use crate::error::{self, Error, Reason, Result};
use crate::tenancy::{TenantContext, TenantDb};

/// A stored row of `R`.
pub type RowOf<R> = <<R as Resource>::Repository as Repository>::Row;
/// The writable columns of `R`.
pub type FieldsOf<R> = <<R as Resource>::Repository as Repository>::Fields;

/// What the kit needs to know of a tenant-scoped resource.
pub trait Resource: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Its table's queries.
    type Repository: Repository;
    /// The resource type of its audit events, and the prefix of their actions (`user`).
    const KIND: &'static str;
    /// Its create method, the scope of create request ids (`CreateUser`).
    const CREATE_METHOD: &'static str;
    /// The reason when it does not exist, or is another tenant's.
    const NOT_FOUND: Reason;
    /// The quota each one counts against (`None`: not counted): a create charges one in its
    /// transaction, a delete releases it.
    const QUOTA: Option<Quota> = None;

    /// The resource of a stored row (INTERNAL if the row holds what it cannot represent).
    fn from_row(row: RowOf<Self>) -> Result<Self>;

    /// What a violated constraint of its table means (`None`: unexpected, INTERNAL).
    fn constraint_error(_constraint: &str) -> Option<Error> {
        None
    }

    /// The details of its create event.
    fn created_details(&self) -> Value {
        json!({})
    }
}

/// One page of a resource.
#[derive(Debug, Clone)]
pub struct Page<R> {
    /// The resources, in creation order.
    pub items: Vec<R>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// The operations on one resource of the context's tenant.
pub struct Resources<R> {
    database: TenantDb,
    resource: PhantomData<fn() -> R>,
}

impl<R> Clone for Resources<R> {
    fn clone(&self) -> Self {
        Self { database: self.database.clone(), resource: PhantomData }
    }
}

impl<R: Resource> Resources<R> {
    /// Resources stored through `database`.
    pub fn new(database: TenantDb) -> Self {
        Self { database, resource: PhantomData }
    }

    /// Creates a resource from validated `input`, exactly once per `request_id` (empty:
    /// none): a retry with the same body returns the first response and creates nothing.
    pub async fn create<I>(&self, context: &TenantContext, request_id: &str, input: I) -> Result<R>
    where
        I: Serialize + Into<FieldsOf<R>> + Send + 'static,
    {
        let key = RequestKey::new(idempotency::Scope::Tenant, R::CREATE_METHOD, request_id, &input)?;
        let scope = QuotaScope::of(context);
        let (resource, replayed) = self
            .database
            .run(context, async move |transaction| {
                if let Some(replay) = idempotency::begin::<R>(transaction, &key).await? {
                    return Ok((replay, true));
                }
                let row = R::Repository::insert(transaction, Uuid::now_v7(), input.into())
                    .await
                    .map_err(|error| error::from_database(error, R::constraint_error))?;
                if let Some(quota) = R::QUOTA {
                    quotas::charge(transaction, &scope, quota, 1).await?;
                }
                let id = R::Repository::id(&row);
                let resource = R::from_row(row)?;
                audit::record(transaction, &format!("{}.create", R::KIND), R::KIND, id, resource.created_details())
                    .await?;
                idempotency::finish(transaction, &key, &resource).await?;
                Ok((resource, false))
            })
            .await?;
        if replayed {
            tracing::info!(resource = R::KIND, "create replayed");
        }
        Ok(resource)
    }

    /// Gets a resource of the context's tenant.
    pub async fn get(&self, context: &TenantContext, id: Uuid) -> Result<R> {
        let row = self.database.read(context, async move |read| Ok(R::Repository::find(read, id).await?)).await?;
        R::from_row(row.ok_or(Error::new(R::NOT_FOUND))?)
    }

    /// Lists the context's tenant's resources in creation order.
    pub async fn list(&self, context: &TenantContext, page_size: i64, page_token: &str) -> Result<Page<R>> {
        let (scope, filter) = (context.tenant_id(), fingerprint(""));
        let after = PageToken::decode(page_token, scope, filter)?;
        let mut rows = self
            .database
            .read(context, async move |read| Ok(R::Repository::list(read, after, page_size + 1).await?))
            .await?;
        let next_page_token = page::next_token(&mut rows, page_size, R::Repository::id, scope, filter);
        let items = rows.into_iter().map(R::from_row).collect::<Result<_>>()?;
        Ok(Page { items, next_page_token })
    }

    /// Applies `patch` to a resource whose revision is `expected_revision` (if given), and
    /// audits the fields it changed.
    pub async fn update<P>(
        &self,
        context: &TenantContext,
        id: Uuid,
        expected_revision: Option<i64>,
        patch: P,
    ) -> Result<R>
    where
        P: Patch<FieldsOf<R>>,
    {
        let row = self
            .database
            .run(context, async move |transaction| {
                let current = R::Repository::lock(transaction, id).await?.ok_or(Error::new(R::NOT_FOUND))?;
                check_etag(expected_revision, R::Repository::revision(&current))?;
                let changed = patch.changed_fields();
                let fields = patch.apply(R::Repository::fields(current));
                let row = R::Repository::save(transaction, id, fields)
                    .await
                    .map_err(|error| error::from_database(error, R::constraint_error))?;
                let action = format!("{}.update", R::KIND);
                audit::record(transaction, &action, R::KIND, id, audit::changed_fields(&changed)).await?;
                Ok(row)
            })
            .await?;
        R::from_row(row)
    }

    /// Deletes a resource whose revision is `expected_revision` (if given).
    pub async fn delete(&self, context: &TenantContext, id: Uuid, expected_revision: Option<i64>) -> Result<()> {
        let scope = QuotaScope::of(context);
        self.database
            .run(context, async move |transaction| {
                let current = R::Repository::lock(transaction, id).await?.ok_or(Error::new(R::NOT_FOUND))?;
                check_etag(expected_revision, R::Repository::revision(&current))?;
                let deleted = R::Repository::delete(transaction, id)
                    .await
                    .map_err(|error| error::from_database(error, R::constraint_error))?;
                if let Some(quota) = R::QUOTA.filter(|_| deleted) {
                    quotas::release(transaction, &scope, quota, 1).await?;
                }
                audit::record(transaction, &format!("{}.delete", R::KIND), R::KIND, id, json!({})).await?;
                Ok(())
            })
            .await
    }
}
