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
pub fn from_database(error: diesel::result::Error, constraint: impl Fn(&str) -> Option<Error>) -> Error {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match &error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation,
            info,
        ) => {
            if let Some(mapped) = info.constraint_name().and_then(&constraint) {
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
