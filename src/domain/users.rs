//! The users of one tenant: a resource of the kit ([`super::resource`]), so every
//! operation takes the [`crate::tenancy::TenantContext`] and runs in one tenant transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::etag;
use super::quotas::Quota;
use super::resource::{Resource, Resources};
pub use crate::db::users::UserPatch;
use crate::db::users::{UserFields, UserRepository, UserRow};
use crate::error::{Error, Reason, Result};

/// What a user may do within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Can read.
    Viewer,
    /// Can read and write.
    Member,
    /// Can manage the tenant's users.
    Admin,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "viewer" => Some(Self::Viewer),
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Etag.
    pub etag: String,
}

impl TryFrom<UserRow> for User {
    type Error = Error;

    fn try_from(row: UserRow) -> Result<Self> {
        let role = Role::parse(&row.role)
            .ok_or_else(|| Error::internal(anyhow::anyhow!("user {} has unknown role {:?}", row.id, row.role)))?;
        Ok(Self {
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            role,
            create_time: row.create_time,
            update_time: row.update_time,
            etag: etag(row.revision),
        })
    }
}

/// Validated values of a user's writable fields.
#[derive(Debug, Clone, Serialize)]
pub struct UserInput {
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
}

impl From<UserInput> for UserFields {
    fn from(input: UserInput) -> Self {
        Self { email: input.email, display_name: input.display_name, role: input.role.as_str().to_owned() }
    }
}

/// Fields `UpdateUser` may change.
pub const UPDATABLE_FIELDS: &[&str] = UserPatch::UPDATABLE_FIELDS;

/// Validates an email address: 3 to 254 characters, one `@` with text on both sides,
/// no whitespace or control characters. Deliverability is not this service's concern.
pub fn parse_email(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, field, "is required"));
    }
    let length = value.chars().count();
    let well_formed = (3..=254).contains(&length)
        && !value.chars().any(|character| character.is_whitespace() || character.is_control())
        && value
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if well_formed {
        Ok(value.to_owned())
    } else {
        Err(Error::invalid(Reason::EmailMalformed, field, "must be an email address of at most 254 characters"))
    }
}

impl Resource for User {
    type Repository = UserRepository;
    const KIND: &'static str = "user";
    const CREATE_METHOD: &'static str = "CreateUser";
    const NOT_FOUND: Reason = Reason::UserNotFound;
    const QUOTA: Option<Quota> = Some(Quota::Users);

    fn from_row(row: UserRow) -> Result<Self> {
        row.try_into()
    }

    fn constraint_error(constraint: &str) -> Option<Error> {
        constraint_error(constraint)
    }
}

/// The users of tenants.
pub type Users = Resources<User>;

/// What a violated constraint means when users are written or deleted; `None` for a
/// constraint this module does not expect (INTERNAL). Public so that tests/api/citus.rs can
/// check every constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "users_tenant_id_email_key" => Some(Error::already_exists(Reason::UserEmailAlreadyExists, "user.email")),
        "users_pkey" => Some(Error::already_exists(Reason::UserAlreadyExists, "user.id")),
        "users_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        "documents_owner_fkey" => Some(Error::new(Reason::UserHasDocuments)),
        _ => None,
    }
}
