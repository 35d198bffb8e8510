//! Repository of the tenant-scoped `users` table, through the resource kit: every query
//! runs in a tenant transaction, so RLS applies. The explicit `tenant_id` predicates are
//! for the indexes, which lead with `tenant_id`; RLS would isolate tenants without them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::users;

/// A stored user.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    /// Owning tenant.
    pub tenant_id: Uuid,
    /// Id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// `viewer`, `member` or `admin`.
    pub role: String,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Revision, the source of the etag.
    pub revision: i64,
}

crate::writable_fields! {
    /// The writable columns of a user.
    pub struct UserFields for users, from UserRow;
    /// New values for the fields an update names.
    pub struct UserPatch;
    {
        /// Email.
        email: String,
        /// Display name.
        display_name: String,
        /// `viewer`, `member` or `admin`.
        role: String,
    }
}

crate::tenant_repository! {
    /// The queries on `users`.
    pub struct UserRepository for users { row: UserRow, fields: UserFields, }
}
