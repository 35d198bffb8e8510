//! Repository of the tenant-scoped `tenant_settings` table, through the resource kit.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use futures_util::future::BoxFuture;

use super::schema::{plans, tenant_settings, tenants};
use super::tenant_tx::{TenantQuery, TenantTx};

/// A stored setting (also the domain's: a setting has no invariant beyond its columns).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, Deserialize)]
#[diesel(table_name = tenant_settings, check_for_backend(diesel::pg::Pg))]
pub struct SettingRow {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Key, unique in the tenant.
    pub key: String,
    /// The value: a JSON bool, number or string.
    pub value: serde_json::Value,
    /// Description.
    pub description: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Revision, the source of the etag.
    pub revision: i64,
}

crate::writable_fields! {
    /// The writable columns of a setting.
    pub struct SettingFields for tenant_settings, from SettingRow;
    /// New values for the fields an update names.
    pub struct SettingPatch;
    {
        /// Key.
        key: String,
        /// Value.
        value: serde_json::Value,
        /// Description.
        description: String,
    }
}

crate::tenant_repository! {
    /// The queries on `tenant_settings`.
    pub struct SettingRepository for tenant_settings { row: SettingRow, fields: SettingFields, }
}

/// The transaction's tenant's first `limit` settings in key order, as `(key, value)`.
pub fn all<'c>(on: impl TenantQuery<'c>, limit: i64) -> BoxFuture<'c, QueryResult<Vec<(String, serde_json::Value)>>> {
    let tenant_id = on.tenant_id();
    on.load(
        tenant_settings::table
            .filter(tenant_settings::tenant_id.eq(tenant_id))
            .order(tenant_settings::key.asc())
            .limit(limit)
            .select((tenant_settings::key, tenant_settings::value)),
    )
}

/// A tenant's plan's name and setting defaults (both `None` without a plan).
pub type PlanDefaults = (Option<String>, Option<serde_json::Value>);

/// The transaction's tenant's plan's name and setting defaults (`None`: no such tenant).
pub fn plan_defaults<'t>(transaction: &'t mut TenantTx<'_>) -> BoxFuture<'t, QueryResult<Option<PlanDefaults>>> {
    let tenant_id = transaction.tenant_id();
    let query = tenants::table
        .left_join(plans::table.on(plans::name.nullable().eq(tenants::plan)))
        .filter(tenants::id.eq(tenant_id))
        .select((tenants::plan, plans::settings.nullable()));
    transaction.optional(query)
}
