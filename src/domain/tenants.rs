//! The tenant registry: the control plane's operations on tenants.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use uuid::Uuid;

use super::page::PageToken;
use super::{Slug, check_etag, etag};
use crate::db::tenants::{NewTenantRow, TenantChanges, TenantRow};
use crate::db::{self, PgPool};
use crate::error::{self, Error, Result};
use crate::tenancy::resolver::TenantResolver;
use crate::tenancy::selector::TenantSelector;

/// The lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    /// Served normally.
    Active,
    /// Data plane answers FAILED_PRECONDITION.
    Suspended,
    /// Soft-deleted: data kept, slug reserved, data plane answers NOT_FOUND.
    Deleted,
}

impl TenantState {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }

    /// The byte a page token records for a list filtered by this state.
    fn filter_code(state: Option<Self>) -> u8 {
        match state {
            None => 0,
            Some(Self::Active) => 1,
            Some(Self::Suspended) => 2,
            Some(Self::Deleted) => 3,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Id.
    pub id: Uuid,
    /// Slug.
    pub slug: String,
    /// Display name.
    pub display_name: String,
    /// State.
    pub state: TenantState,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Deletion time.
    pub delete_time: Option<DateTime<Utc>>,
    /// Etag.
    pub etag: String,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = Error;

    fn try_from(row: TenantRow) -> Result<Self> {
        let state = TenantState::parse(&row.state)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("tenant {} has unknown state {:?}", row.id, row.state)))?;
        let labels = serde_json::from_value(row.labels).map_err(|error| {
            Error::Internal(anyhow::Error::new(error).context("tenant labels are not a string map"))
        })?;
        Ok(Self {
            id: row.id,
            slug: row.slug,
            display_name: row.display_name,
            state,
            labels,
            create_time: row.create_time,
            update_time: row.update_time,
            delete_time: row.delete_time,
            etag: etag(row.revision),
        })
    }
}

/// A validated tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub display_name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// New values for the fields an update names; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New labels (replacing all labels).
    pub labels: Option<BTreeMap<String, String>>,
}

/// Fields `UpdateTenant` may change.
pub const UPDATABLE_FIELDS: &[&str] = &["display_name", "labels"];

/// A lifecycle transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// ACTIVE → SUSPENDED.
    Suspend,
    /// SUSPENDED → ACTIVE.
    Resume,
    /// ACTIVE or SUSPENDED → DELETED.
    Delete,
}

/// One page of tenants.
#[derive(Debug, Clone)]
pub struct TenantPage {
    /// The tenants.
    pub tenants: Vec<Tenant>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// The control plane's operations on tenants.
#[derive(Clone)]
pub struct TenantRegistry {
    pool: PgPool,
    resolver: Arc<TenantResolver>,
}

impl TenantRegistry {
    /// A registry over the app-role pool; changes invalidate `resolver`'s cache.
    pub fn new(pool: PgPool, resolver: Arc<TenantResolver>) -> Self {
        Self { pool, resolver }
    }

    /// Creates an ACTIVE tenant.
    pub async fn create(&self, new: NewTenant) -> Result<Tenant> {
        let mut connection = self.pool.get().await?;
        let labels = labels_json(&new.labels)?;
        let row = db::tenants::insert(
            &mut connection,
            NewTenantRow {
                id: Uuid::now_v7(),
                slug: new.slug.as_str(),
                display_name: &new.display_name,
                state: TenantState::Active.as_str(),
                labels,
            },
        )
        .await
        .map_err(map_database_error)?;
        tracing::info!(tenant.id = %row.id, tenant.slug = %row.slug, "tenant created");
        row.try_into()
    }

    /// Gets a tenant in any state.
    pub async fn get(&self, selector: &TenantSelector) -> Result<Tenant> {
        let mut connection = self.pool.get().await?;
        let row = match selector {
            TenantSelector::Id(id) => db::tenants::find_by_id(&mut connection, *id).await?,
            TenantSelector::Slug(slug) => db::tenants::find_by_slug(&mut connection, slug.as_str()).await?,
        };
        row.ok_or(Error::NotFound { reason: "TENANT_NOT_FOUND" })?.try_into()
    }

    /// Lists tenants in creation order.
    pub async fn list(&self, state: Option<TenantState>, page_size: i64, page_token: &str) -> Result<TenantPage> {
        let filter = TenantState::filter_code(state);
        let after = PageToken::decode(page_token, Uuid::nil(), filter)?;
        let mut connection = self.pool.get().await?;
        let mut rows = db::tenants::list(&mut connection, state.map(TenantState::as_str), after, page_size + 1).await?;
        let next_page_token = next_token(&mut rows, page_size, |row| row.id, Uuid::nil(), filter);
        let tenants = rows.into_iter().map(Tenant::try_from).collect::<Result<_>>()?;
        Ok(TenantPage { tenants, next_page_token })
    }

    /// Applies an update to a tenant that is not deleted.
    pub async fn update(&self, id: Uuid, expected_revision: Option<i64>, patch: TenantPatch) -> Result<Tenant> {
        self.modify(id, expected_revision, move |row| {
            if row.state == TenantState::Deleted.as_str() {
                return Err(tenant_deleted());
            }
            let mut changes = changes_of(row);
            if let Some(display_name) = patch.display_name {
                changes.display_name = display_name;
            }
            if let Some(labels) = &patch.labels {
                changes.labels = labels_json(labels)?;
            }
            Ok(Some(changes))
        })
        .await
    }

    /// Applies a lifecycle transition. Repeating a transition is a no-op; leaving
    /// DELETED is FAILED_PRECONDITION.
    pub async fn transition(&self, id: Uuid, expected_revision: Option<i64>, transition: Transition) -> Result<Tenant> {
        let tenant = self
            .modify(id, expected_revision, move |row| {
                let current = TenantState::parse(&row.state)
                    .ok_or_else(|| Error::Internal(anyhow::anyhow!("tenant has unknown state")))?;
                let target = match (transition, current) {
                    (Transition::Delete, TenantState::Deleted) => return Ok(None),
                    (_, TenantState::Deleted) => return Err(tenant_deleted()),
                    (Transition::Suspend, _) => TenantState::Suspended,
                    (Transition::Resume, _) => TenantState::Active,
                    (Transition::Delete, _) => TenantState::Deleted,
                };
                if target == current {
                    return Ok(None);
                }
                let mut changes = changes_of(row);
                changes.state = target.as_str().to_owned();
                changes.delete_time = (target == TenantState::Deleted).then(Utc::now);
                Ok(Some(changes))
            })
            .await?;
        tracing::info!(tenant.id = %id, state = tenant.state.as_str(), "tenant state changed");
        Ok(tenant)
    }

    /// Locks the tenant, checks the etag, lets `decide` compute the new columns (or
    /// `None` for a no-op), saves them, commits, then invalidates the resolution cache.
    async fn modify<F>(&self, id: Uuid, expected_revision: Option<i64>, decide: F) -> Result<Tenant>
    where
        F: FnOnce(&TenantRow) -> Result<Option<TenantChanges>> + Send + 'static,
    {
        let mut connection = self.pool.get().await?;
        let row = connection
            .transaction::<TenantRow, Error, _>(async move |connection| {
                let row = db::tenants::lock_by_id(connection, id)
                    .await?
                    .ok_or(Error::NotFound { reason: "TENANT_NOT_FOUND" })?;
                check_etag(expected_revision, row.revision)?;
                match decide(&row)? {
                    None => Ok(row),
                    Some(changes) => Ok(db::tenants::save(connection, id, changes).await?),
                }
            })
            .await?;
        drop(connection);
        self.resolver.invalidate(id).await;
        row.try_into()
    }
}

/// Pops the look-ahead row, if any, and returns the token of the page after `rows`.
pub(crate) fn next_token<T>(
    rows: &mut Vec<T>,
    page_size: i64,
    id_of: impl Fn(&T) -> Uuid,
    scope: Uuid,
    filter: u8,
) -> String {
    let page_size = usize::try_from(page_size).unwrap_or(usize::MAX);
    if rows.len() <= page_size {
        return String::new();
    }
    rows.truncate(page_size);
    rows.last().map(|last| PageToken { scope, filter, after: id_of(last) }.encode()).unwrap_or_default()
}

fn changes_of(row: &TenantRow) -> TenantChanges {
    TenantChanges {
        display_name: row.display_name.clone(),
        state: row.state.clone(),
        labels: row.labels.clone(),
        delete_time: row.delete_time,
    }
}

fn labels_json(labels: &BTreeMap<String, String>) -> Result<serde_json::Value> {
    serde_json::to_value(labels).map_err(|error| Error::Internal(error.into()))
}

fn tenant_deleted() -> Error {
    Error::FailedPrecondition { reason: "TENANT_DELETED", message: "the tenant is deleted" }
}

fn map_database_error(error: diesel::result::Error) -> Error {
    error::from_database(error, |constraint| match constraint {
        "tenants_slug_key" => Some(("TENANT_SLUG_ALREADY_EXISTS", "tenant.slug")),
        "tenants_pkey" => Some(("TENANT_ALREADY_EXISTS", "tenant.id")),
        _ => None,
    })
}
