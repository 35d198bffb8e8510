//! Repository of the tenant-scoped `tenant_quota_usage` table: one counter per tenant and
//! counted resource, changed in the transaction of the create or delete it counts.

use diesel::prelude::*;
use diesel::upsert::excluded;
use futures_util::future::BoxFuture;

use super::schema::tenant_quota_usage;
use super::tenant_tx::{TenantQuery, TenantTx};

/// Adds `amount` to the transaction's tenant's counter of `quota` if the sum stays within
/// `cap` (`None`: no cap), creating the counter on first use. One statement: the counter's
/// row lock serialises concurrent charges, and the check sees the latest count, so
/// concurrent creates cannot overshoot. Returns the new count, or `None` if the charge was
/// refused (the count is unchanged). `amount` must be positive and at most `cap`.
pub fn charge<'t>(
    transaction: &'t mut TenantTx<'_>,
    quota: &str,
    amount: i64,
    cap: Option<i64>,
) -> BoxFuture<'t, QueryResult<Option<i64>>> {
    use tenant_quota_usage::dsl;
    let values = (dsl::tenant_id.eq(transaction.tenant_id()), dsl::quota.eq(quota.to_owned()), dsl::used.eq(amount));
    let upsert = diesel::insert_into(tenant_quota_usage::table)
        .values(values)
        .on_conflict((dsl::tenant_id, dsl::quota))
        .do_update()
        .set(dsl::used.eq(dsl::used + excluded(dsl::used)));
    let query = diesel::query_dsl::methods::FilterDsl::filter(
        upsert,
        (dsl::used + excluded(dsl::used)).le(cap.unwrap_or(i64::MAX)),
    )
    .returning(dsl::used);
    transaction.optional(query)
}

/// Takes `amount` off the transaction's tenant's counter of `quota` (a delete freed it).
pub fn release<'t>(
    transaction: &'t mut TenantTx<'_>,
    quota: &str,
    amount: i64,
) -> BoxFuture<'t, QueryResult<Option<i64>>> {
    use tenant_quota_usage::dsl;
    let tenant_id = transaction.tenant_id();
    let query = diesel::update(tenant_quota_usage::table.find((tenant_id, quota.to_owned())))
        .set(dsl::used.eq(dsl::used - amount))
        .returning(dsl::used);
    transaction.optional(query)
}

/// Every counter of the tenant, as `(quota, used)`.
pub fn usage<'c>(on: impl TenantQuery<'c>) -> BoxFuture<'c, QueryResult<Vec<(String, i64)>>> {
    use tenant_quota_usage::dsl;
    let tenant_id = on.tenant_id();
    on.load(tenant_quota_usage::table.filter(dsl::tenant_id.eq(tenant_id)).select((dsl::quota, dsl::used)))
}
