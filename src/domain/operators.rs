//! Operators: the platform's named credentials. Creation (the key is shown once), reading,
//! listing and revocation, and the check that authenticates a platform call with a key.
//!
//! Who created and who revoked an operator is recorded on the operator itself (`bootstrap`
//! or `operator:<id>`): operators belong to no tenant, so no tenant's audit trail holds
//! their management.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::page::{self, PageToken, fingerprint};
use crate::auth::operator_key::OperatorKeyToken;
use crate::db;
use crate::db::operators::{NewOperatorRow, OperatorRow};
use crate::error::{Error, Reason, Result};
use crate::tenancy::resolver::{OperatorRecord, TenantResolver};
use crate::tenancy::{Actor, OperatorRole, RequestContext, TenantDb};

/// An operator, without its key's secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub display_name: String,
    /// Role; `None` for a stored role this build does not know (it authenticates nothing).
    pub role: Option<OperatorRole>,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Who created it: `bootstrap` or `operator:<id>`.
    pub created_by: String,
    /// Revocation time.
    pub revoke_time: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

impl From<OperatorRow> for Operator {
    fn from(row: OperatorRow) -> Self {
        Self {
            id: row.id,
            display_name: row.display_name,
            role: OperatorRole::parse(&row.role),
            create_time: row.create_time,
            created_by: row.created_by,
            revoke_time: row.revoke_time,
            revoked_by: row.revoked_by,
        }
    }
}

/// A validated operator to create.
#[derive(Debug, Clone)]
pub struct NewOperator {
    /// Display name, 1 to 200 characters.
    pub display_name: String,
    /// Role.
    pub role: OperatorRole,
}

/// A created operator and its key, shown once.
#[derive(Debug, Clone)]
pub struct CreatedOperator {
    /// The operator.
    pub operator: Operator,
    /// The whole key text.
    pub secret: String,
}

/// One page of operators.
#[derive(Debug, Clone)]
pub struct OperatorPage {
    /// The operators, oldest first.
    pub operators: Vec<Operator>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// Checks a presented operator key against its record: it must exist, hash to the stored
/// secret (compared in constant time), have a known role and not be revoked. Every failure
/// is UNAUTHENTICATED; a revoked key says so, so its holder knows to ask for a new one.
pub fn authenticate(token: &OperatorKeyToken, record: Option<OperatorRecord>) -> Result<OperatorRole> {
    let record = record.ok_or(Error::new(Reason::OperatorKeyInvalid))?;
    if !token.matches(&record.secret_sha256) {
        return Err(Error::new(Reason::OperatorKeyInvalid));
    }
    if record.revoked {
        return Err(Error::new(Reason::OperatorKeyRevoked));
    }
    record.role.ok_or(Error::new(Reason::OperatorKeyInvalid))
}

/// The control plane's operations on operators.
#[derive(Clone)]
pub struct Operators {
    database: TenantDb,
    resolver: Arc<TenantResolver>,
}

impl Operators {
    /// Operators stored through `database`; revocations invalidate `resolver`'s caches.
    pub fn new(database: TenantDb, resolver: Arc<TenantResolver>) -> Self {
        Self { database, resolver }
    }

    /// Creates an operator with a fresh key.
    pub async fn create(&self, request: RequestContext, new: NewOperator) -> Result<CreatedOperator> {
        let created_by = actor_label(request.actor())?;
        let token = OperatorKeyToken::generate(Uuid::now_v7()).map_err(Error::internal)?;
        let secret_sha256 = token.secret_sha256();
        let row = self
            .database
            .global(async |connection| {
                let row = NewOperatorRow {
                    id: token.operator_id(),
                    display_name: &new.display_name,
                    role: new.role.as_str(),
                    secret_sha256: &secret_sha256,
                    created_by: &created_by,
                };
                db::operators::insert(connection, row)
                    .await
                    .map_err(|error| crate::error::from_database(error, constraint_error))
            })
            .await?;
        tracing::info!(
            operator.id = %row.id, operator.role = %row.role, actor.kind = request.actor().kind(),
            actor.id = %request.actor().id(), "operator created"
        );
        Ok(CreatedOperator { operator: row.into(), secret: token.encode() })
    }

    /// Gets an operator, revoked ones included.
    pub async fn get(&self, id: Uuid) -> Result<Operator> {
        let row = db::retry::read(|| {
            self.database.global(async move |connection| Ok(db::operators::find(connection, id).await?))
        })
        .await?;
        row.map(Operator::from).ok_or(Error::new(Reason::OperatorNotFound))
    }

    /// Lists operators in creation order, revoked ones included.
    pub async fn list(&self, page_size: i64, page_token: &str) -> Result<OperatorPage> {
        let filter = fingerprint("operators");
        let after = PageToken::decode(page_token, Uuid::nil(), filter)?;
        let mut rows = db::retry::read(|| {
            self.database
                .global(async move |connection| Ok(db::operators::list(connection, after, page_size + 1).await?))
        })
        .await?;
        let next_page_token = page::next_token(&mut rows, page_size, |row| row.id, Uuid::nil(), filter);
        Ok(OperatorPage { operators: rows.into_iter().map(Operator::from).collect(), next_page_token })
    }

    /// Revokes an operator's key; every replica refuses it within a second. Revoking twice
    /// is a no-op (the first revocation's time and author stay).
    pub async fn revoke(&self, request: RequestContext, id: Uuid) -> Result<Operator> {
        let revoked_by = actor_label(request.actor())?;
        let revoked = self
            .database
            .global(async |connection| Ok(db::operators::revoke(connection, id, &revoked_by).await?))
            .await?;
        let Some(row) = revoked else {
            // Nothing changed: unknown, or revoked already.
            return self.get(id).await;
        };
        self.resolver.invalidate_operator(id).await;
        tracing::info!(
            operator.id = %id, actor.kind = request.actor().kind(), actor.id = %request.actor().id(),
            "operator revoked"
        );
        Ok(row.into())
    }
}

/// How an operator row records who acted: `bootstrap` or `operator:<id>`. Only platform
/// callers reach the control plane; anyone else here is a bug, refused.
pub(crate) fn actor_label(actor: &Actor) -> Result<String> {
    match actor {
        Actor::Bootstrap => Ok("bootstrap".to_owned()),
        Actor::Operator { operator_id, .. } => Ok(format!("operator:{operator_id}")),
        Actor::System | Actor::ApiKey { .. } => {
            Err(Error::internal(anyhow::anyhow!("operators managed by a non-platform actor {actor:?}")))
        }
    }
}

/// What a violated constraint means when operators are written; `None` for a constraint
/// this module does not expect (INTERNAL). Public so that tests/api/citus.rs can check every
/// constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        "operators_pkey" => Some(Error::already_exists(Reason::OperatorAlreadyExists, "operator.id")),
        _ => None,
    }
}
