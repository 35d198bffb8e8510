//! Repository of the tenant-scoped `tenant_quota_usage` table: one counter per tenant and
//! counted resource, changed in the transaction of the create or delete it counts.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use futures_util::future::BoxFuture;
use uuid::Uuid;

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
    let query =
        Charge { tenant_id: transaction.tenant_id(), quota: quota.to_owned(), amount, cap: cap.unwrap_or(i64::MAX) };
    transaction.optional(query)
}

/// The upsert of [`charge`], written out so that it has a static query id: diesel's upsert
/// with a WHERE has none, so it was prepared anew (one more round trip) on every create.
/// Every value is a bind parameter.
#[derive(Debug, Clone)]
struct Charge {
    tenant_id: Uuid,
    quota: String,
    amount: i64,
    cap: i64,
}

impl QueryId for Charge {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Charge {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for Charge {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO tenant_quota_usage (tenant_id, quota, used) VALUES (");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.tenant_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.quota)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.amount)?;
        out.push_sql(
            ") ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenant_quota_usage.used + excluded.used \
             WHERE tenant_quota_usage.used + excluded.used <= ",
        );
        out.push_bind_param::<BigInt, _>(&self.cap)?;
        out.push_sql(" RETURNING used");
        Ok(())
    }
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
