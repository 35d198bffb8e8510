//! The repository half of the resource kit (`docs/adding-a-resource.md`).
//!
//! A tenant-scoped resource table has `tenant_id`, `id` (a UUIDv7, its primary key with
//! `tenant_id`), writable columns, `create_time`, `update_time` and `revision`. For such a
//! table, [`writable_fields!`](crate::writable_fields) declares the writable columns (and
//! the patch of an update), and [`tenant_repository!`](crate::tenant_repository) writes
//! every query the kit's steps need, so a repository is a row type and two macro calls.

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::tenant_tx::{TenantQuery, TenantTx};

/// The queries the kit's steps run on one tenant table. Each returns a boxed future (see
/// [`TenantQuery`] for why).
pub trait Repository: Send + Sync + 'static {
    /// A stored row.
    type Row: Send + 'static;
    /// The writable columns.
    type Fields: Send + 'static;

    /// The row's id.
    fn id(row: &Self::Row) -> Uuid;
    /// The row's revision, the source of its etag.
    fn revision(row: &Self::Row) -> i64;
    /// The row's writable columns, as an update starts from them.
    fn fields(row: Self::Row) -> Self::Fields;
    /// Inserts a row into the transaction's tenant.
    fn insert<'t>(
        transaction: &'t mut TenantTx<'_>,
        id: Uuid,
        fields: Self::Fields,
    ) -> BoxFuture<'t, diesel::QueryResult<Self::Row>>;
    /// Finds a row of the transaction's tenant.
    fn find<'c>(on: impl TenantQuery<'c>, id: Uuid) -> BoxFuture<'c, diesel::QueryResult<Option<Self::Row>>>;
    /// Finds a row and locks it until the transaction ends.
    fn lock<'t>(transaction: &'t mut TenantTx<'_>, id: Uuid) -> BoxFuture<'t, diesel::QueryResult<Option<Self::Row>>>;
    /// One page of the tenant's rows in id (creation) order, after a cursor.
    fn list<'c>(
        on: impl TenantQuery<'c>,
        after: Option<Uuid>,
        limit: i64,
    ) -> BoxFuture<'c, diesel::QueryResult<Vec<Self::Row>>>;
    /// Writes a row's columns, bumps its revision and update time.
    fn save<'t>(
        transaction: &'t mut TenantTx<'_>,
        id: Uuid,
        fields: Self::Fields,
    ) -> BoxFuture<'t, diesel::QueryResult<Self::Row>>;
    /// Deletes a row; whether one was deleted.
    fn delete<'t>(transaction: &'t mut TenantTx<'_>, id: Uuid) -> BoxFuture<'t, diesel::QueryResult<bool>>;
}

/// An update's new values for some writable columns.
pub trait Patch<Fields>: Send + 'static {
    /// The names of the fields the patch sets, for the audit event.
    fn changed_fields(&self) -> Vec<&'static str>;
    /// The columns after the patch: its values where it has them, `current` elsewhere.
    fn apply(self, current: Fields) -> Fields;
    /// The columns of a patch that sets every field (a create), else `None`.
    fn complete(self) -> Option<Fields>;
}

/// Declares a table's writable columns as a struct that inserts itself and that diesel
/// updates (and that a stored row converts into), and the patch of an update: the same fields as `Option`s, with [`Patch`] implemented and
/// `UPDATABLE_FIELDS` listing their names (the paths an update mask may name).
#[macro_export]
macro_rules! writable_fields {
    (
        $(#[$fields_meta:meta])* pub struct $fields:ident for $table:ident, from $row:ident;
        $(#[$patch_meta:meta])* pub struct $patch:ident;
        { $( $(#[$field_meta:meta])* $field:ident : $type:ty, )* }
    ) => {
        $(#[$fields_meta])*
        #[derive(Debug, Clone, serde::Serialize, diesel::AsChangeset)]
        #[diesel(table_name = $table, treat_none_as_null = true)]
        pub struct $fields {
            $( $(#[$field_meta])* pub $field: $type, )*
        }

        impl From<$row> for $fields {
            fn from(row: $row) -> Self {
                Self { $( $field: row.$field, )* }
            }
        }

        impl $fields {
            /// Inserts these columns as a new row `id` of the transaction's tenant. The
            /// values are listed column by column: diesel prepares an insert of a derived
            /// `Insertable` anew every time (its columns may be `DEFAULT`), which would cost a
            /// round trip per create.
            pub fn insert<'t>(
                self,
                transaction: &'t mut $crate::db::tenant_tx::TenantTx<'_>,
                id: uuid::Uuid,
            ) -> futures_util::future::BoxFuture<'t, diesel::QueryResult<$row>> {
                use diesel::prelude::*;
                let values = ($table::tenant_id.eq(transaction.tenant_id()), $table::id.eq(id), $($table::$field.eq(self.$field)),*);
                let query = diesel::insert_into($table::table).values(values).returning(<$row>::as_returning());
                let row = $crate::db::tenant_tx::TenantQuery::optional(transaction, query);
                Box::pin(async move { row.await?.ok_or(diesel::result::Error::NotFound) })
            }
        }

        $(#[$patch_meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $patch {
            $( $(#[$field_meta])* pub $field: Option<$type>, )*
        }

        impl $patch {
            /// The fields an update may name.
            pub const UPDATABLE_FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl $crate::db::resource::Patch<$fields> for $patch {
            fn changed_fields(&self) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $( if self.$field.is_some() { changed.push(stringify!($field)); } )*
                changed
            }

            fn apply(self, current: $fields) -> $fields {
                $fields { $( $field: self.$field.unwrap_or(current.$field), )* }
            }

            fn complete(self) -> Option<$fields> {
                Some($fields { $( $field: self.$field?, )* })
            }
        }
    };
}

/// Implements [`Repository`] for a tenant table with the kit's columns: `$repository` over
/// `$table`, whose rows are `$row` (`Queryable + Selectable`, with `id` and `revision`)
/// and whose writable columns are `$fields` (from [`writable_fields!`](crate::writable_fields)).
#[macro_export]
macro_rules! tenant_repository {
    ($(#[$meta:meta])* pub struct $repository:ident for $table:ident { row: $row:ty, fields: $fields:ty, }) => {
        $(#[$meta])*
        pub struct $repository;

        impl $crate::db::resource::Repository for $repository {
            type Row = $row;
            type Fields = $fields;

            fn id(row: &$row) -> uuid::Uuid {
                row.id
            }

            fn revision(row: &$row) -> i64 {
                row.revision
            }

            fn fields(row: $row) -> $fields {
                row.into()
            }

            fn insert<'t>(
                transaction: &'t mut $crate::db::tenant_tx::TenantTx<'_>,
                id: uuid::Uuid,
                fields: $fields,
            ) -> futures_util::future::BoxFuture<'t, diesel::QueryResult<$row>> {
                fields.insert(transaction, id)
            }

            fn find<'c>(
                on: impl $crate::db::tenant_tx::TenantQuery<'c>,
                id: uuid::Uuid,
            ) -> futures_util::future::BoxFuture<'c, diesel::QueryResult<Option<$row>>> {
                use diesel::prelude::*;
                let tenant_id = on.tenant_id();
                on.optional($table::table.find((tenant_id, id)).select(<$row>::as_select()))
            }

            fn lock<'t>(
                transaction: &'t mut $crate::db::tenant_tx::TenantTx<'_>,
                id: uuid::Uuid,
            ) -> futures_util::future::BoxFuture<'t, diesel::QueryResult<Option<$row>>> {
                use diesel::prelude::*;
                let query =
                    $table::table.find((transaction.tenant_id(), id)).select(<$row>::as_select()).for_update();
                $crate::db::tenant_tx::TenantQuery::optional(transaction, query)
            }

            fn list<'c>(
                on: impl $crate::db::tenant_tx::TenantQuery<'c>,
                after: Option<uuid::Uuid>,
                limit: i64,
            ) -> futures_util::future::BoxFuture<'c, diesel::QueryResult<Vec<$row>>> {
                use diesel::prelude::*;
                let tenant_id = on.tenant_id();
                on.load(
                    $table::table
                        .filter($table::tenant_id.eq(tenant_id))
                        .filter($table::id.gt(after.unwrap_or(uuid::Uuid::nil())))
                        .order($table::id.asc())
                        .limit(limit)
                        .select(<$row>::as_select()),
                )
            }

            fn save<'t>(
                transaction: &'t mut $crate::db::tenant_tx::TenantTx<'_>,
                id: uuid::Uuid,
                fields: $fields,
            ) -> futures_util::future::BoxFuture<'t, diesel::QueryResult<$row>> {
                use diesel::prelude::*;
                let query = diesel::update($table::table.find((transaction.tenant_id(), id)))
                    .set((fields, $table::revision.eq($table::revision + 1), $table::update_time.eq(diesel::dsl::now)))
                    .returning(<$row>::as_returning());
                let row = $crate::db::tenant_tx::TenantQuery::optional(transaction, query);
                Box::pin(async move { row.await?.ok_or(diesel::result::Error::NotFound) })
            }

            fn delete<'t>(
                transaction: &'t mut $crate::db::tenant_tx::TenantTx<'_>,
                id: uuid::Uuid,
            ) -> futures_util::future::BoxFuture<'t, diesel::QueryResult<bool>> {
                use diesel::prelude::*;
                let query = diesel::delete($table::table.find((transaction.tenant_id(), id)))
                    .returning($table::id);
                let deleted = $crate::db::tenant_tx::TenantQuery::optional::<_, uuid::Uuid>(transaction, query);
                Box::pin(async move { Ok(deleted.await?.is_some()) })
            }
        }
    };
}
