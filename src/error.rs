//! The one domain error type and the one place it becomes a gRPC status.
//!
//! Error policy:
//! - Every error carries a gRPC code chosen on purpose and a `google.rpc.ErrorInfo` with
//!   domain [`ERROR_DOMAIN`] and a stable, SCREAMING_SNAKE reason clients can branch on.
//! - Bad input is INVALID_ARGUMENT with `google.rpc.BadRequest` field violations; it is
//!   never INTERNAL and never a panic.
//! - A resource of another tenant answers exactly like a missing one: NOT_FOUND.
//! - Database and Redis error text never reaches the client. It is logged here, once,
//!   with the RPC's span; the client sees a fixed message.
//! - Mapping of database errors: unique violation → ALREADY_EXISTS (by constraint name),
//!   pool timeout or lost connection → UNAVAILABLE, anything else → INTERNAL.
//! - Constraint names are read as Citus reports them too: a worker's error carries no
//!   constraint name, only a message naming the shard's constraint (`users_tenant_id_email_key_102030`).
//!   The name comes from the message then, and a shard suffix is removed, so a duplicate on
//!   Citus answers exactly as on PostgreSQL.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo.domain` of every tenantd error.
pub const ERROR_DOMAIN: &str = "tenantd";

/// One `google.rpc.BadRequest.FieldViolation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field, e.g. `tenant.slug`, or a metadata key.
    pub field: String,
    /// What is wrong with it, for people.
    pub description: String,
}

/// Everything that can go wrong while serving a request.
#[derive(Debug)]
pub enum Error {
    /// Input failed validation (INVALID_ARGUMENT).
    InvalidArgument {
        /// ErrorInfo reason.
        reason: &'static str,
        /// Which fields are wrong and why.
        violations: Vec<FieldViolation>,
    },
    /// No valid credentials (UNAUTHENTICATED).
    Unauthenticated {
        /// ErrorInfo reason.
        reason: &'static str,
    },
    /// Valid credentials that do not allow the call (PERMISSION_DENIED).
    PermissionDenied {
        /// ErrorInfo reason.
        reason: &'static str,
        /// For people.
        message: &'static str,
    },
    /// The resource does not exist, or belongs to another tenant (NOT_FOUND).
    NotFound {
        /// ErrorInfo reason.
        reason: &'static str,
    },
    /// A unique value is taken (ALREADY_EXISTS).
    AlreadyExists {
        /// ErrorInfo reason.
        reason: &'static str,
        /// The field whose value is taken.
        field: &'static str,
    },
    /// The system is not in a state that allows the call (FAILED_PRECONDITION).
    FailedPrecondition {
        /// ErrorInfo reason.
        reason: &'static str,
        /// For people.
        message: &'static str,
    },
    /// A concurrency check failed, e.g. an etag mismatch (ABORTED).
    Aborted {
        /// ErrorInfo reason.
        reason: &'static str,
    },
    /// A dependency is unavailable; the call may be retried (UNAVAILABLE).
    Unavailable {
        /// ErrorInfo reason.
        reason: &'static str,
        /// Logged, never sent.
        source: anyhow::Error,
    },
    /// A bug or an unexpected failure (INTERNAL). Logged, never sent.
    Internal(anyhow::Error),
}

/// Result alias for the request path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An INVALID_ARGUMENT error about one field.
    pub fn invalid(reason: &'static str, field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            reason,
            violations: vec![FieldViolation { field: field.into(), description: description.into() }],
        }
    }

    /// The error for an etag that does not match the stored one.
    pub fn etag_mismatch() -> Self {
        Self::Aborted { reason: "ETAG_MISMATCH" }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Aborted { .. } => Code::Aborted,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// The ErrorInfo reason of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { reason, .. }
            | Self::Unauthenticated { reason }
            | Self::NotFound { reason }
            | Self::AlreadyExists { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::Aborted { reason }
            | Self::Unavailable { reason, .. } => reason,
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn message(&self) -> String {
        match self {
            Self::InvalidArgument { violations, .. } => match violations.as_slice() {
                [only] => format!("invalid {}: {}", only.field, only.description),
                _ => "invalid request".to_owned(),
            },
            Self::Unauthenticated { .. } => "missing or invalid credentials".to_owned(),
            Self::NotFound { reason } => match *reason {
                "TENANT_NOT_FOUND" => "tenant not found".to_owned(),
                "USER_NOT_FOUND" => "user not found".to_owned(),
                "DOCUMENT_NOT_FOUND" => "document not found".to_owned(),
                "API_KEY_NOT_FOUND" => "api key not found".to_owned(),
                _ => "not found".to_owned(),
            },
            Self::AlreadyExists { field, .. } => format!("{field} is already taken"),
            Self::FailedPrecondition { message, .. } | Self::PermissionDenied { message, .. } => (*message).to_owned(),
            Self::Aborted { .. } => "the resource changed since it was read; read it again and retry".to_owned(),
            Self::Unavailable { .. } => "a dependency is unavailable; retry later".to_owned(),
            Self::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Internal(source) => tracing::error!(error = %format!("{source:#}"), "internal error"),
            Error::Unavailable { source, reason } => {
                tracing::warn!(error = %format!("{source:#}"), reason, "dependency unavailable");
            }
            _ => {}
        }
        let mut metadata = HashMap::new();
        if let Error::AlreadyExists { field, .. } = &error {
            metadata.insert("field".to_owned(), (*field).to_owned());
        }
        let mut details = ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, metadata);
        if let Error::InvalidArgument { violations, .. } = &error {
            for violation in violations {
                details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
            }
        }
        Status::with_error_details(error.code(), error.message(), details)
    }
}

/// Maps a database error. Unique and foreign-key violations are mapped through
/// `constraint`, which turns the name of an expected constraint into the domain error it
/// means (ALREADY_EXISTS for a taken value, for example); unexpected ones are INTERNAL.
/// `constraint` sees the table's constraint name, also when Citus reported a shard's.
pub fn from_database(error: diesel::result::Error, constraint: impl Fn(&str) -> Option<Error>) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match &error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation,
            info,
        ) => {
            if let Some(mapped) = violated_constraint(info.as_ref()).and_then(&constraint) {
                return mapped;
            }
            Error::Internal(anyhow::Error::new(error).context("unexpected constraint violation"))
        }
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _)
        | DieselError::BrokenTransactionManager => {
            Error::Unavailable { reason: "DATABASE_UNAVAILABLE", source: error.into() }
        }
        _ => Error::Internal(anyhow::Error::new(error).context("database error")),
    }
}

/// The name of the violated constraint as the table defines it. PostgreSQL reports it in
/// `constraint_name`; Citus forwards a worker's error without one, and its message names
/// the shard's constraint: `... violates unique constraint "users_tenant_id_email_key_102030"`.
fn violated_constraint(info: &(dyn diesel::result::DatabaseErrorInformation + Send + Sync)) -> Option<&str> {
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
            bb8::RunError::User(source) => {
                Error::Unavailable { reason: "DATABASE_UNAVAILABLE", source: anyhow::Error::new(source) }
            }
            bb8::RunError::TimedOut => Error::Unavailable {
                reason: "DATABASE_POOL_EXHAUSTED",
                source: anyhow::anyhow!("timed out waiting for a pooled database connection"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};

    use super::*;

    /// A database error as a server reports it: a message, and a constraint name or none.
    struct Reported {
        message: &'static str,
        constraint_name: Option<&'static str>,
    }

    impl DatabaseErrorInformation for Reported {
        fn message(&self) -> &str {
            self.message
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
            self.constraint_name
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn reported(
        kind: DatabaseErrorKind,
        message: &'static str,
        constraint_name: Option<&'static str>,
    ) -> diesel::result::Error {
        diesel::result::Error::DatabaseError(kind, Box::new(Reported { message, constraint_name }))
    }

    fn code_and_reason(error: Error) -> (Code, &'static str) {
        (error.code(), error.reason())
    }

    #[test]
    fn a_citus_duplicate_without_a_constraint_name_maps_by_the_shard_constraint_in_its_message() {
        let email = reported(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"users_tenant_id_email_key_102030\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(email, crate::domain::users::constraint_error)),
            (Code::AlreadyExists, "USER_EMAIL_ALREADY_EXISTS")
        );
        let slug = reported(
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
        let owner = reported(
            DatabaseErrorKind::ForeignKeyViolation,
            "insert or update on table \"documents_102040\" violates foreign key constraint \"documents_owner_fkey_102040\"",
            None,
        );
        assert_eq!(
            code_and_reason(from_database(owner, crate::domain::documents::constraint_error)),
            (Code::InvalidArgument, "OWNER_NOT_FOUND")
        );
        let delete = reported(
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
        let slug = reported(
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
        let email = reported(
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
        let known = reported(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"tenants_slug_key_7\"",
            None,
        );
        assert_eq!(from_database(known, crate::domain::tenants::constraint_error).code(), Code::AlreadyExists);
        let unknown = reported(
            DatabaseErrorKind::UniqueViolation,
            "duplicate key value violates unique constraint \"something_else_key_7\"",
            None,
        );
        assert_eq!(from_database(unknown, crate::domain::tenants::constraint_error).code(), Code::Internal);
        for message in ["duplicate key value", "violates unique constraint \"", "violates unique constraint \"\""] {
            let unreadable = reported(DatabaseErrorKind::UniqueViolation, message, None);
            assert_eq!(
                from_database(unreadable, crate::domain::tenants::constraint_error).code(),
                Code::Internal,
                "{message}"
            );
        }
    }
}
