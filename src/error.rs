//! The one domain error type and the one place it becomes a gRPC status.
//!
//! Error policy:
//! - Every error has a [`Reason`] from the closed set in [`reason`], and the reason alone
//!   decides the gRPC code (`Reason::code`). The status carries a `google.rpc.ErrorInfo`
//!   with domain [`ERROR_DOMAIN`] and the reason's stable SCREAMING_SNAKE text.
//! - Bad input is INVALID_ARGUMENT with `google.rpc.BadRequest` field violations, all of
//!   them at once ([`Violations`] collects them); it is never INTERNAL and never a panic.
//! - A resource of another tenant answers exactly like a missing one: NOT_FOUND.
//! - Database and Redis error text never reaches the client. It is logged here, once,
//!   with the RPC's span; the client sees the reason's fixed message.
//! - Mapping of database errors: unique and foreign-key violations by constraint name
//!   (each domain module names its constraints), pool timeout or lost connection →
//!   UNAVAILABLE, anything else → INTERNAL.
//! - Nothing outside this module and [`reason`] turns one code into another, and nothing
//!   compares reason strings: code compares [`Reason`] values.
//! - Constraint names are read as Citus reports them too: a worker's error carries no
//!   constraint name, only a message naming the shard's constraint (`users_tenant_id_email_key_102030`).
//!   The name comes from the message then, and a shard suffix is removed, so a duplicate on
//!   Citus answers exactly as on PostgreSQL.

use std::collections::HashMap;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

mod database;
pub mod reason;

pub use database::from_database;
#[doc(hidden)]
pub use database::reported_database_error;
pub use reason::Reason;

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
pub struct Error {
    reason: Reason,
    violations: Vec<FieldViolation>,
    taken_field: Option<&'static str>,
    metadata: Vec<(&'static str, String)>,
    quota: Option<Box<QuotaExceeded>>,
    source: Option<anyhow::Error>,
}

/// The google.rpc.QuotaFailure and RetryInfo of a RESOURCE_EXHAUSTED error (boxed: rare, and
/// it keeps [`Error`] small).
#[derive(Debug)]
struct QuotaExceeded {
    subject: String,
    description: String,
    retry_delay: Option<std::time::Duration>,
}

/// Result alias for the request path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error whose reason says it all (NOT_FOUND, FAILED_PRECONDITION, ...).
    pub fn new(reason: Reason) -> Self {
        Self { reason, violations: Vec::new(), taken_field: None, metadata: Vec::new(), quota: None, source: None }
    }

    /// A RESOURCE_EXHAUSTED error: the quota `subject` (e.g. `tenant:<id>`), described for
    /// people, is used up; a retry may succeed after `retry_delay`, if given. Both are sent
    /// as google.rpc.QuotaFailure and google.rpc.RetryInfo.
    pub fn quota_exceeded(
        reason: Reason,
        subject: String,
        description: String,
        retry_delay: Option<std::time::Duration>,
    ) -> Self {
        Self { quota: Some(Box::new(QuotaExceeded { subject, description, retry_delay })), ..Self::new(reason) }
    }

    /// An INVALID_ARGUMENT error about one field.
    pub fn invalid(reason: Reason, field: impl Into<String>, description: impl Into<String>) -> Self {
        let violation = FieldViolation { field: field.into(), description: description.into() };
        Self { violations: vec![violation], ..Self::new(reason) }
    }

    /// An ALREADY_EXISTS error: the value of `field` is taken.
    pub fn already_exists(reason: Reason, field: &'static str) -> Self {
        Self { taken_field: Some(field), ..Self::new(reason) }
    }

    /// A dependency failed; `source` is logged, never sent.
    pub fn unavailable(reason: Reason, source: anyhow::Error) -> Self {
        Self { source: Some(source), ..Self::new(reason) }
    }

    /// A bug or an unexpected failure (INTERNAL); `source` is logged, never sent.
    pub fn internal(source: anyhow::Error) -> Self {
        Self { source: Some(source), ..Self::new(Reason::Internal) }
    }

    /// Adds an entry to the ErrorInfo metadata the client receives (e.g. `resume_cursor`);
    /// the value must be safe to show the caller.
    pub fn with_metadata(mut self, key: &'static str, value: String) -> Self {
        self.metadata.push((key, value));
        self
    }

    /// Adds a `google.rpc.QuotaFailure` violation: the quota (`subject`) that refused the call.
    pub fn with_quota_failure(mut self, subject: &'static str, description: String) -> Self {
        self.quota = Some(Box::new(QuotaExceeded { subject: subject.to_owned(), description, retry_delay: None }));
        self
    }

    /// The error for an etag that does not match the stored one.
    pub fn etag_mismatch() -> Self {
        Self::new(Reason::EtagMismatch)
    }

    /// The reason of this error.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The gRPC code of this error: its reason's.
    pub fn code(&self) -> tonic::Code {
        self.reason.code()
    }

    /// The field violations of an INVALID_ARGUMENT error.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// The error as it stands once the connection it happened on turned out to be closed:
    /// an unexpected database failure there is UNAVAILABLE (the database went away), not a
    /// bug. Other errors are unchanged.
    pub fn on_closed_connection(self) -> Self {
        match self.reason {
            Reason::Internal => Self { reason: Reason::DatabaseUnavailable, ..self }.context("the connection closed"),
            _ => self,
        }
    }

    /// Adds what went wrong underneath, for the log.
    pub fn context(mut self, context: &'static str) -> Self {
        self.source = Some(match self.source.take() {
            Some(source) => source.context(context),
            None => anyhow::anyhow!(context),
        });
        self
    }

    fn message(&self) -> String {
        match (self.violations.as_slice(), self.taken_field) {
            ([only], _) => format!("invalid {}: {}", only.field, only.description),
            ([_, _, ..], _) => format!("invalid request: {} fields are invalid", self.violations.len()),
            ([], Some(field)) => format!("{field} is already taken"),
            ([], None) => self.reason.message().to_owned(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.reason.as_str(), self.message())
    }
}

/// Collects the field violations of a request, so that all of them are returned together.
#[derive(Debug, Default)]
pub struct Violations {
    first: Option<Error>,
}

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `outcome`, or `None` after recording its violations. An error that is
    /// not INVALID_ARGUMENT is kept as it is and wins over any violation.
    pub fn check<T>(&mut self, outcome: Result<T>) -> Option<T> {
        let error = match outcome {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        self.first = Some(match self.first.take() {
            None => error,
            Some(mut first)
                if first.code() == tonic::Code::InvalidArgument && error.code() == tonic::Code::InvalidArgument =>
            {
                first.violations.extend(error.violations);
                first
            }
            Some(first) if first.code() == tonic::Code::InvalidArgument => error,
            Some(first) => first,
        });
        None
    }

    /// Records one violation.
    pub fn add(&mut self, reason: Reason, field: impl Into<String>, description: impl Into<String>) {
        self.check::<()>(Err(Error::invalid(reason, field, description)));
    }

    /// What `build` makes of the checked values if nothing was recorded, else the error
    /// with every violation (its ErrorInfo reason is the first violation's). `build` sees
    /// the values [`Violations::check`] returned; it returns `None` only if one of them is
    /// missing, which cannot happen once nothing was recorded.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T> {
        match self.first {
            Some(error) => Err(error),
            None => build().ok_or_else(|| Error::internal(anyhow::anyhow!("a check failed without a violation"))),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match (error.reason.code(), &error.source) {
            (tonic::Code::Internal, source) => {
                let source = source.as_ref().map(|source| format!("{source:#}")).unwrap_or_default();
                tracing::error!(error = %source, "internal error");
            }
            (tonic::Code::Unavailable, Some(source)) => {
                tracing::warn!(error = %format!("{source:#}"), reason = error.reason.as_str(), "dependency unavailable");
            }
            _ => {}
        }
        let mut metadata = HashMap::new();
        if let Some(field) = error.taken_field {
            metadata.insert("field".to_owned(), field.to_owned());
        }
        for (key, value) in &error.metadata {
            metadata.insert((*key).to_owned(), value.clone());
        }
        let mut details = ErrorDetails::with_error_info(error.reason.as_str(), ERROR_DOMAIN, metadata);
        for violation in &error.violations {
            details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
        }
        if let Some(quota) = &error.quota {
            details.add_quota_failure_violation(quota.subject.clone(), quota.description.clone());
            if let Some(delay) = quota.retry_delay {
                details.set_retry_info(Some(delay));
            }
        }
        Status::with_error_details(error.code(), error.message(), details)
    }
}
