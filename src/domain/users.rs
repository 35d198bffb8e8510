//! The users of one tenant. Every operation takes the [`TenantContext`] and runs in one
//! tenant transaction.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use super::idempotency::{self, RequestKey};
use super::page::{self, PageToken, fingerprint};
use super::{audit, check_etag, etag};
use crate::db::users::{UserFields, UserRow};
use crate::error::{self, Error, Reason, Result};
use crate::tenancy::{TenantContext, TenantDb};

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

impl UserInput {
    fn into_fields(self) -> UserFields {
        UserFields { email: self.email, display_name: self.display_name, role: self.role.as_str().to_owned() }
    }
}

/// New values for the fields an update names; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New email.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New role.
    pub role: Option<Role>,
}

impl UserPatch {
    fn changed_fields(&self) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.email.is_some() {
            changed.push("email");
        }
        if self.display_name.is_some() {
            changed.push("display_name");
        }
        if self.role.is_some() {
            changed.push("role");
        }
        changed
    }
}

/// Fields `UpdateUser` may change.
pub const UPDATABLE_FIELDS: &[&str] = &["email", "display_name", "role"];

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

/// One page of users.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The users.
    pub users: Vec<User>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// The users of tenants.
#[derive(Clone)]
pub struct Users {
    database: TenantDb,
}

impl Users {
    /// Users stored through `database`.
    pub fn new(database: TenantDb) -> Self {
        Self { database }
    }

    /// Creates a user, exactly once per `request_id`.
    pub async fn create(&self, context: &TenantContext, input: UserInput, request_id: &str) -> Result<User> {
        let key = RequestKey::new(idempotency::Scope::Tenant, "CreateUser", request_id, &input)?;
        self.database
            .run(context, async move |transaction| {
                if let Some(replay) = idempotency::begin::<User>(transaction, &key).await? {
                    return Ok(replay);
                }
                let row = crate::db::users::insert(transaction, Uuid::now_v7(), input.into_fields())
                    .await
                    .map_err(map_database_error)?;
                let user = User::try_from(row)?;
                audit::record(transaction, "user.create", "user", user.id, serde_json::json!({})).await?;
                idempotency::finish(transaction, &key, &user).await?;
                Ok(user)
            })
            .await
    }

    /// Gets a user of the context's tenant.
    pub async fn get(&self, context: &TenantContext, id: Uuid) -> Result<User> {
        let row = self
            .database
            .read(context, async move |transaction| Ok(crate::db::users::find(transaction, id).await?))
            .await?;
        row.ok_or_else(user_not_found)?.try_into()
    }

    /// Lists the context's tenant's users in creation order.
    pub async fn list(&self, context: &TenantContext, page_size: i64, page_token: &str) -> Result<UserPage> {
        let scope = context.tenant_id();
        let filter = fingerprint("");
        let after = PageToken::decode(page_token, scope, filter)?;
        let mut rows =
            self.database
                .read(context, async move |transaction| {
                    Ok(crate::db::users::list(transaction, after, page_size + 1).await?)
                })
                .await?;
        let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, scope, filter);
        let users = rows.into_iter().map(User::try_from).collect::<Result<_>>()?;
        Ok(UserPage { users, next_page_token })
    }

    /// Updates the fields a patch names.
    pub async fn update(
        &self,
        context: &TenantContext,
        id: Uuid,
        expected_revision: Option<i64>,
        patch: UserPatch,
    ) -> Result<User> {
        let row = self
            .database
            .run(context, async move |transaction| {
                let current = crate::db::users::lock(transaction, id).await?.ok_or_else(user_not_found)?;
                check_etag(expected_revision, current.revision)?;
                let changed = patch.changed_fields();
                let fields = UserFields {
                    email: patch.email.unwrap_or(current.email),
                    display_name: patch.display_name.unwrap_or(current.display_name),
                    role: patch.role.map_or(current.role, |role| role.as_str().to_owned()),
                };
                let row = crate::db::users::save(transaction, id, fields).await.map_err(map_database_error)?;
                audit::record(transaction, "user.update", "user", id, audit::changed_fields(&changed)).await?;
                Ok(row)
            })
            .await?;
        row.try_into()
    }

    /// Deletes a user.
    pub async fn delete(&self, context: &TenantContext, id: Uuid, expected_revision: Option<i64>) -> Result<()> {
        self.database
            .run(context, async move |transaction| {
                let current = crate::db::users::lock(transaction, id).await?.ok_or_else(user_not_found)?;
                check_etag(expected_revision, current.revision)?;
                crate::db::users::delete(transaction, id).await.map_err(map_database_error)?;
                audit::record(transaction, "user.delete", "user", id, serde_json::json!({})).await?;
                Ok(())
            })
            .await
    }
}

fn user_not_found() -> Error {
    Error::new(Reason::UserNotFound)
}

fn map_database_error(error: diesel::result::Error) -> Error {
    error::from_database(error, constraint_error)
}

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
