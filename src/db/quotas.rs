//! Repository of the tenant-scoped `tenant_quota_usage` table: one counter per tenant and
//! counted resource, kept while a cap applies to it and changed in the transaction of the
//! create or delete it counts; recounted from the rows when it is not trusted (decision 0016).

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::schema::tenant_quota_usage;
use super::tenant_tx::{TenantQuery, TenantTx};

/// A counter's value and whether it is trusted (`None`, like `false`: not trusted).
pub type Counter = (i64, Option<bool>);

/// Adds `amount` to the transaction's tenant's counter of `quota` if the counter is trusted
/// (recounted at or after `trusted_from`; `None`: never) and the sum stays within `cap`,
/// creating an untrusted counter (0, never counted) on first use. One statement: the
/// counter's row lock serialises concurrent charges (and is held even when nothing is
/// changed), and the check sees the latest count, so concurrent creates cannot overshoot.
/// Returns the counter's value and whether it is trusted: `(new count, true)` when charged,
/// `(0, false)` for a counter just created; `None` when nothing was charged (refused, or the
/// counter is untrusted: see [`counter`]). `amount` must be positive and at most `cap`.
pub fn charge<'t>(
    transaction: &'t mut TenantTx<'_>,
    quota: &str,
    amount: i64,
    cap: i64,
    trusted_from: Option<DateTime<Utc>>,
) -> BoxFuture<'t, QueryResult<Option<Counter>>> {
    let query = Charge { tenant_id: transaction.tenant_id(), quota: quota.to_owned(), amount, cap, trusted_from };
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
    trusted_from: Option<DateTime<Utc>>,
}

impl QueryId for Charge {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Charge {
    type SqlType = (BigInt, Nullable<Bool>);
}

impl QueryFragment<Pg> for Charge {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("INSERT INTO tenant_quota_usage (tenant_id, quota, used, counted_at) VALUES (");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.tenant_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.quota)?;
        out.push_sql(
            ", 0, '-infinity') ON CONFLICT (tenant_id, quota) DO UPDATE SET used = tenant_quota_usage.used + ",
        );
        out.push_bind_param::<BigInt, _>(&self.amount)?;
        out.push_sql(" WHERE tenant_quota_usage.counted_at >= ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&self.trusted_from)?;
        out.push_sql(" AND tenant_quota_usage.used + ");
        out.push_bind_param::<BigInt, _>(&self.amount)?;
        out.push_sql(" <= ");
        out.push_bind_param::<BigInt, _>(&self.cap)?;
        out.push_sql(" RETURNING used, counted_at >= ");
        out.push_bind_param::<Nullable<Timestamptz>, _>(&self.trusted_from)?;
        Ok(())
    }
}

/// The transaction's tenant's counter of `quota` and whether it is trusted (recounted at or
/// after `trusted_from`): what a [`charge`] that changed nothing found. The charge locked the
/// row, so this is its latest version.
pub fn counter<'t>(
    transaction: &'t mut TenantTx<'_>,
    quota: &str,
    trusted_from: Option<DateTime<Utc>>,
) -> BoxFuture<'t, QueryResult<Option<Counter>>> {
    use tenant_quota_usage::dsl;
    let tenant_id = transaction.tenant_id();
    let trusted = dsl::counted_at.nullable().ge(trusted_from);
    let query = tenant_quota_usage::table.find((tenant_id, quota.to_owned())).select((dsl::used, trusted));
    transaction.optional(query)
}

/// Sets the transaction's tenant's counter of `quota` to the count of its rows (what the
/// transaction itself wrote included), as of this statement, and marks it counted now.
/// Call after a [`charge`] locked the counter: then every concurrent charge or release waits
/// for this transaction, and the count is exact for it. One statement, an index scan of the
/// tenant's rows (only while a counter is untrusted: after a change of the tenant's limits).
/// Returns the new count (`None` if the counter does not exist).
/// `None` also for a quota this module cannot count.
pub fn recount<'t>(transaction: &'t mut TenantTx<'_>, quota: &str) -> BoxFuture<'t, QueryResult<Option<i64>>> {
    let Some(&(quota, count)) = COUNTS.iter().find(|(name, _)| *name == quota) else {
        return Box::pin(async { Ok(None) });
    };
    let query = Recount { tenant_id: transaction.tenant_id(), quota, count };
    transaction.optional(query)
}

/// Each counted quota's stored name and the live count of its rows of a tenant (the query
/// ends where the tenant id's bind parameter goes), in the order of [`live_usage`].
const COUNTS: [(&str, &str); 4] = [
    ("users", "SELECT count(*) FROM users WHERE tenant_id = "),
    ("documents", "SELECT count(*) FROM documents WHERE tenant_id = "),
    ("document_bytes", "SELECT coalesce(sum(octet_length(content)), 0)::bigint FROM documents WHERE tenant_id = "),
    ("api_keys", "SELECT count(*) FROM api_keys WHERE revoke_time IS NULL AND tenant_id = "),
];

/// The update of [`recount`]: its text depends on the quota, so it is cached by its text
/// (no static query id). Every value is a bind parameter.
#[derive(Debug, Clone)]
struct Recount {
    tenant_id: Uuid,
    quota: &'static str,
    count: &'static str,
}

impl QueryId for Recount {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Recount {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for Recount {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE tenant_quota_usage SET used = (");
        out.push_sql(self.count);
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.tenant_id)?;
        out.push_sql("), counted_at = statement_timestamp() WHERE tenant_id = ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.tenant_id)?;
        out.push_sql(" AND quota = ");
        out.push_bind_param::<Text, _>(self.quota)?;
        out.push_sql(" RETURNING used");
        Ok(())
    }
}

/// Takes `amount` off the transaction's tenant's counter of `quota` (a delete freed it), not
/// below 0 (an untrusted counter may be behind). Locks the counter, so a concurrent recount
/// either sees this delete or runs after it.
pub fn release<'t>(
    transaction: &'t mut TenantTx<'_>,
    quota: &str,
    amount: i64,
) -> BoxFuture<'t, QueryResult<Option<i64>>> {
    use tenant_quota_usage::dsl;
    let tenant_id = transaction.tenant_id();
    let query = diesel::update(tenant_quota_usage::table.find((tenant_id, quota.to_owned())))
        .set(dsl::used.eq(greatest(dsl::used - amount, 0_i64)))
        .returning(dsl::used);
    transaction.optional(query)
}

diesel::define_sql_function! {
    /// PostgreSQL's `greatest` of two bigints.
    fn greatest(a: BigInt, b: BigInt) -> BigInt;
}

/// The live count of every counted quota's rows of the tenant, as `(quota, used)` (users,
/// documents, document_bytes, api_keys): counters are kept only while a cap applies, so
/// usage is read from the rows (one statement).
pub fn live_usage<'c>(on: impl TenantQuery<'c>) -> BoxFuture<'c, QueryResult<Vec<(String, i64)>>> {
    let query = LiveUsage { tenant_id: on.tenant_id() };
    let counts = on.optional(query);
    Box::pin(async move {
        let Some((users, documents, document_bytes, api_keys)) = counts.await? else {
            return Ok(Vec::new());
        };
        let used = [users, documents, document_bytes, api_keys];
        Ok(COUNTS.iter().zip(used).map(|((quota, _), used)| ((*quota).to_owned(), used)).collect())
    })
}

/// The select of [`live_usage`]. Every value is a bind parameter.
#[derive(Debug, Clone)]
struct LiveUsage {
    tenant_id: Uuid,
}

impl QueryId for LiveUsage {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for LiveUsage {
    type SqlType = (BigInt, BigInt, BigInt, BigInt);
}

impl QueryFragment<Pg> for LiveUsage {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ");
        for (index, (_, count)) in COUNTS.iter().enumerate() {
            out.push_sql(if index == 0 { "(" } else { ", (" });
            out.push_sql(count);
            out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.tenant_id)?;
            out.push_sql(")");
        }
        Ok(())
    }
}
