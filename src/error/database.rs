//! Database errors as domain errors: [`from_database`] and the `From` conversions of diesel
//! and pool errors, following the policy in [`crate::error`]. A violated constraint is
//! mapped by its name as the table defines it, also when Citus reported a shard's
//! constraint (the name is read from the message then, and the shard suffix removed).

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};

use super::{Error, Reason};

/// Maps a database error. Unique and foreign-key violations are mapped through
/// `constraint`, which turns the name of an expected constraint into the domain error it
/// means (ALREADY_EXISTS for a taken value, for example); unexpected ones are INTERNAL.
/// `constraint` sees the table's constraint name, also when Citus reported a shard's.
pub fn from_database(error: diesel::result::Error, constraint: impl Fn(&str) -> Option<Error>) -> Error {
    use diesel::result::Error as DieselError;
    match &error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation,
            info,
        ) => {
            if let Some(mapped) = violated_constraint(info.as_ref()).and_then(&constraint) {
                return mapped;
            }
            Error::internal(anyhow::Error::new(error).context("unexpected constraint violation"))
        }
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => Error::unavailable(Reason::DatabaseUnavailable, error.into()),
        _ => Error::internal(anyhow::Error::new(error).context("database error")),
    }
}

/// The name of the violated constraint as the table defines it. PostgreSQL reports it in
/// `constraint_name`; Citus forwards a worker's error without one, and its message names
/// the shard's constraint: `... violates unique constraint "users_tenant_id_email_key_102030"`.
fn violated_constraint(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> Option<&str> {
    let reported = match info.constraint_name() {
        Some(name) => name,
        None => quoted_constraint(info.message())?,
    };
    Some(without_shard_suffix(reported))
}

/// The text between the first pair of double quotes after `constraint ` in a message.
fn quoted_constraint(message: &str) -> Option<&str> {
    const MARKER: &str = "constraint \"";
    let start = message.find(MARKER)? + MARKER.len();
    let length = message[start..].find('"')?;
    Some(&message[start..start + length]).filter(|name| !name.is_empty())
}

/// A Citus shard's name is its table's name plus `_<shard id>`: an all-digits suffix after
/// the last underscore is removed (`users_tenant_id_email_key` stays as is). No constraint of
/// the schema ends in `_<digits>` (tests/api/citus.rs checks), so nothing else is shortened.
fn without_shard_suffix(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((unsharded, suffix))
            if !unsharded.is_empty() && !suffix.is_empty() && suffix.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            unsharded
        }
        _ => name,
    }
}

impl From<diesel::result::Error> for Error {
    fn from(error: diesel::result::Error) -> Self {
        from_database(error, |_| None)
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for Error {
    fn from(error: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        match error {
            bb8::RunError::User(source) => Error::unavailable(Reason::DatabaseUnavailable, anyhow::Error::new(source)),
            bb8::RunError::TimedOut => Error::unavailable(
                Reason::DatabasePoolExhausted,
                anyhow::anyhow!("timed out waiting for a pooled database connection"),
            ),
        }
    }
}

/// A database error in the shape a server reports it: its kind, its message, and the
/// constraint name PostgreSQL sets (Citus forwards a worker's error without one). Support
/// for tests of [`from_database`], here and in `tests/api/citus.rs`; not part of the API.
#[doc(hidden)]
pub fn reported_database_error(
    kind: DatabaseErrorKind,
    message: impl Into<String>,
    constraint_name: Option<&str>,
) -> diesel::result::Error {
    let reported = Reported { message: message.into(), constraint_name: constraint_name.map(str::to_owned) };
    diesel::result::Error::DatabaseError(kind, Box::new(reported))
}

/// What [`reported_database_error`] reports: a message and a constraint name or none.
struct Reported {
    message: String,
    constraint_name: Option<String>,
}

impl DatabaseErrorInformation for Reported {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        None
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        self.constraint_name.as_deref()
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn code_and_reason(error: Error) -> (Code, &'static str) {
        (error.code(), error.reason().as_str())
    }

    #[test]
    fn a_citus_duplicate_without_a_constraint_name_maps_by_the_shard_constraint_in_its_message() {
        let email = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"users_tenant_id_email_key_102030\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(email, crate::domain::users::constraint_error)),
            (Code::AlreadyExists, "USER_EMAIL_ALREADY_EXISTS")
        );
        let slug = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"tenants_slug_key_102008\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(slug, crate::domain::tenants::constraint_error)),
            (Code::AlreadyExists, "TENANT_SLUG_ALREADY_EXISTS")
        );
    }

    #[test]
    fn a_citus_foreign_key_violation_maps_by_the_constraint_not_the_table_quoted_first() {
        let owner = reported_database_error(
            DatabaseErrorKind::ForeignKeyViolation,
            "insert or update on table \"documents_102040\" violates foreign key constraint \"documents_owner_fkey_102040\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(owner, crate::domain::documents::constraint_error)),
            (Code::InvalidArgument, "OWNER_NOT_FOUND")
        );
        let delete = reported_database_error(
            DatabaseErrorKind::ForeignKeyViolation,
            "update or delete on table \"users_102008\" violates foreign key constraint \"documents_owner_fkey_102040\" on table \"documents_102040\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(delete, crate::domain::users::constraint_error)),
            (Code::FailedPrecondition, "USER_HAS_DOCUMENTS")
        );
    }

    #[test]
    fn a_shard_suffix_is_removed_from_a_reported_constraint_name_too() {
        let slug = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"tenants_slug_key_102008\"",
            Some("tenants_slug_key_102008"),
        );
        assert_eq!(
            code_and_reason(from_database(slug, crate::domain::tenants::constraint_error)),
            (Code::AlreadyExists, "TENANT_SLUG_ALREADY_EXISTS")
        );
    }

    #[test]
    fn a_postgresql_violation_still_maps_by_its_constraint_name() {
        let email = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"users_tenant_id_email_key\"",
            Some("users_tenant_id_email_key"),
        );
        assert_eq!(
            code_and_reason(from_database(email, crate::domain::users::constraint_error)),
            (Code::AlreadyExists, "USER_EMAIL_ALREADY_EXISTS")
        );
    }

    #[test]
    fn only_an_all_digits_suffix_after_the_last_underscore_is_a_shard_suffix() {
        assert_eq!(without_shard_suffix("users_tenant_id_email_key_102030"), "users_tenant_id_email_key");
        assert_eq!(without_shard_suffix("users_tenant_id_email_key"), "users_tenant_id_email_key");
        assert_eq!(without_shard_suffix("documents_owner_fkey"), "documents_owner_fkey");
        assert_eq!(without_shard_suffix("keys_v2"), "keys_v2");
        assert_eq!(without_shard_suffix("keys_2x"), "keys_2x");
        assert_eq!(without_shard_suffix("keys_"), "keys_");
        assert_eq!(without_shard_suffix("_102030"), "_102030");
        assert_eq!(without_shard_suffix("102030"), "102030");
    }

    #[test]
    fn an_unknown_or_unreadable_constraint_is_still_internal() {
        // Control: the same message with a known constraint maps.
        let known = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"tenants_slug_key_7\"",
            None,
        );
        assert_eq!(from_database(known, crate::domain::tenants::constraint_error).code(), Code::AlreadyExists);
        let unknown = reported_database_error(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"something_else_key_7\"",
            None,
        );
        assert_eq!(from_database(unknown, crate::domain::tenants::constraint_error).code(), Code::Internal);
        for message in ["duplicate key value", "violates unique constraint \"", "violates unique constraint \"\""] {
            let unreadable = reported_database_error(DatabaseErrorKind::UniqueViolation, message, None);
            assert_eq!(
                from_database(unreadable, crate::domain::tenants::constraint_error).code(),
                Code::Internal,
                "{message}"
            );
        }
    }
}
