//! The registry's rows: a tenant read back from its row and its identifier rows, the row
//! locked for a change, identifiers replaced. Each function runs inside the caller's
//! transaction (or on its connection) and sends no BEGIN of its own.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{ChannelBinding, Tenant, TenantState, map_database_error, tenant_not_found};
use crate::db::tenant_tx::TenantTx;
use crate::db::tenants::{TenantChanges, TenantRow};
use crate::db::{self, Connection};
use crate::domain::{check_etag, etag};
use crate::error::{Error, Result};
use crate::tenancy::IsolationTier;
use crate::tenancy::Limits;

/// Locks the transaction's tenant's row and checks the etag.
pub(super) async fn lock(transaction: &mut TenantTx<'_>, expected_revision: Option<i64>) -> Result<TenantRow> {
    let id = transaction.tenant_id();
    let row = db::tenants::lock_by_id(transaction.connection(), id).await?.ok_or_else(tenant_not_found)?;
    check_etag(expected_revision, row.revision)?;
    Ok(row)
}

/// Replaces the transaction's tenant's domains and/or channel bindings.
pub(super) async fn write_identifiers(
    transaction: &mut TenantTx<'_>,
    domains: Option<&[String]>,
    bindings: Option<&[ChannelBinding]>,
) -> Result<()> {
    let id = transaction.tenant_id();
    if let Some(domains) = domains {
        db::identifiers::replace_domains(transaction.connection(), id, domains).await.map_err(map_database_error)?;
    }
    if let Some(bindings) = bindings {
        let pairs: Vec<(String, String)> =
            bindings.iter().map(|binding| (binding.channel_type.clone(), binding.external_id.clone())).collect();
        db::identifiers::replace_channels(transaction.connection(), id, &pairs).await.map_err(map_database_error)?;
    }
    Ok(())
}

/// A tenant row with its identifiers, inside a transaction.
pub(super) async fn load(transaction: &mut TenantTx<'_>, row: TenantRow) -> Result<Tenant> {
    let mut tenants = assemble(transaction.connection(), vec![row]).await?;
    tenants.pop().ok_or_else(tenant_not_found)
}

/// Tenants from rows, with their identifiers (two queries for the whole batch).
pub(super) async fn assemble(connection: &mut Connection<'_>, rows: Vec<TenantRow>) -> Result<Vec<Tenant>> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let mut domains: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for (tenant_id, domain) in db::identifiers::domains_of(connection, &ids).await? {
        domains.entry(tenant_id).or_default().push(domain);
    }
    let mut bindings: BTreeMap<Uuid, Vec<ChannelBinding>> = BTreeMap::new();
    for (tenant_id, channel_type, external_id) in db::identifiers::channels_of(connection, &ids).await? {
        bindings.entry(tenant_id).or_default().push(ChannelBinding { channel_type, external_id });
    }
    rows.into_iter()
        .map(|row| {
            let state = TenantState::parse(&row.state).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("tenant {} has unknown state {:?}", row.id, row.state))
            })?;
            let isolation_tier = IsolationTier::parse(&row.isolation_tier).ok_or_else(|| {
                Error::internal(anyhow::anyhow!("tenant {} has unknown tier {:?}", row.id, row.isolation_tier))
            })?;
            let labels = serde_json::from_value(row.labels).map_err(|error| {
                Error::internal(anyhow::Error::new(error).context("tenant labels are not a string map"))
            })?;
            let limit_overrides = Limits::from_json(&row.limit_overrides)
                .ok_or_else(|| Error::internal(anyhow::anyhow!("tenant {} has unreadable limit overrides", row.id)))?;
            Ok(Tenant {
                id: row.id,
                slug: row.slug.unwrap_or_default(),
                display_name: row.display_name.unwrap_or_default(),
                state,
                isolation_tier,
                labels,
                domains: domains.remove(&row.id).unwrap_or_default(),
                channel_bindings: bindings.remove(&row.id).unwrap_or_default(),
                create_time: row.create_time,
                update_time: row.update_time,
                delete_time: row.delete_time,
                purge_time: row.purge_time,
                etag: etag(row.revision),
                plan: row.plan,
                limit_overrides,
            })
        })
        .collect()
}

/// The row's current values, to change some of them.
pub(super) fn changes_of(row: &TenantRow) -> TenantChanges {
    TenantChanges {
        display_name: row.display_name.clone(),
        state: row.state.clone(),
        labels: row.labels.clone(),
        delete_time: row.delete_time,
        plan: row.plan.clone(),
        limit_overrides: row.limit_overrides.clone(),
    }
}

/// Labels as the row stores them: a JSON object of strings.
pub(super) fn labels_json(labels: &BTreeMap<String, String>) -> Result<serde_json::Value> {
    serde_json::to_value(labels).map_err(|error| Error::internal(error.into()))
}
