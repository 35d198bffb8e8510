//! Repository of the registry's identifier tables: `tenant_domains` and
//! `tenant_channel_bindings` (global, like `tenants`).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Connection;
use uuid::Uuid;

use super::schema::{tenant_channel_bindings, tenant_domains};

/// The tenant owning a domain.
pub async fn tenant_by_domain(connection: &mut Connection<'_>, domain: &str) -> QueryResult<Option<Uuid>> {
    tenant_domains::table.find(domain).select(tenant_domains::tenant_id).first(connection).await.optional()
}

/// The tenant owning a channel binding.
pub async fn tenant_by_channel(
    connection: &mut Connection<'_>,
    channel_type: &str,
    external_id: &str,
) -> QueryResult<Option<Uuid>> {
    tenant_channel_bindings::table
        .find((channel_type, external_id))
        .select(tenant_channel_bindings::tenant_id)
        .first(connection)
        .await
        .optional()
}

/// The domains of some tenants, sorted.
pub async fn domains_of(connection: &mut Connection<'_>, tenant_ids: &[Uuid]) -> QueryResult<Vec<(Uuid, String)>> {
    tenant_domains::table
        .filter(tenant_domains::tenant_id.eq_any(tenant_ids))
        .select((tenant_domains::tenant_id, tenant_domains::domain))
        .order(tenant_domains::domain.asc())
        .load(connection)
        .await
}

/// The channel bindings of some tenants, sorted.
pub async fn channels_of(
    connection: &mut Connection<'_>,
    tenant_ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, String, String)>> {
    tenant_channel_bindings::table
        .filter(tenant_channel_bindings::tenant_id.eq_any(tenant_ids))
        .select((
            tenant_channel_bindings::tenant_id,
            tenant_channel_bindings::channel_type,
            tenant_channel_bindings::external_id,
        ))
        .order((tenant_channel_bindings::channel_type.asc(), tenant_channel_bindings::external_id.asc()))
        .load(connection)
        .await
}

/// Replaces a tenant's domains. A domain owned by another tenant violates
/// `tenant_domains_pkey`.
pub async fn replace_domains(connection: &mut Connection<'_>, tenant_id: Uuid, domains: &[String]) -> QueryResult<()> {
    diesel::delete(tenant_domains::table.filter(tenant_domains::tenant_id.eq(tenant_id))).execute(connection).await?;
    let rows: Vec<_> = domains
        .iter()
        .map(|domain| (tenant_domains::domain.eq(domain), tenant_domains::tenant_id.eq(tenant_id)))
        .collect();
    diesel::insert_into(tenant_domains::table).values(rows).execute(connection).await?;
    Ok(())
}

/// Replaces a tenant's channel bindings. A binding owned by another tenant violates
/// `tenant_channel_bindings_pkey`.
pub async fn replace_channels(
    connection: &mut Connection<'_>,
    tenant_id: Uuid,
    bindings: &[(String, String)],
) -> QueryResult<()> {
    diesel::delete(tenant_channel_bindings::table.filter(tenant_channel_bindings::tenant_id.eq(tenant_id)))
        .execute(connection)
        .await?;
    let rows: Vec<_> = bindings
        .iter()
        .map(|(channel_type, external_id)| {
            (
                tenant_channel_bindings::channel_type.eq(channel_type),
                tenant_channel_bindings::external_id.eq(external_id),
                tenant_channel_bindings::tenant_id.eq(tenant_id),
            )
        })
        .collect();
    diesel::insert_into(tenant_channel_bindings::table).values(rows).execute(connection).await?;
    Ok(())
}
