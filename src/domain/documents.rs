//! A tenant's documents. Every operation takes the [`TenantContext`] and runs in one
//! tenant transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::idempotency::{self, RequestKey};
use super::page::{PageToken, fingerprint};
use super::quotas::{self, Quota, QuotaScope};
use super::{audit, check_etag, etag};
use crate::db::documents::{DocumentFields, DocumentRow};
use crate::error::{self, Error, Reason, Result};
use crate::tenancy::{TenantContext, TenantDb};

/// Largest document content, in bytes (1 MiB).
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Largest metadata object, as JSON bytes (64 KiB).
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Most document content in one ListDocuments page (3 MiB), so that a page stays under the
/// 4 MiB a default gRPC client accepts; a page always holds at least one document.
pub const MAX_PAGE_CONTENT_BYTES: i64 = 3 * 1024 * 1024;
/// Fields `UpdateDocument` may change.
pub const UPDATABLE_FIELDS: &[&str] = &["title", "content", "metadata", "owner_user_id"];

/// A document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Content.
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// SHA-256 of the content, lowercase hex.
    pub content_sha256: String,
    /// Metadata, a JSON object.
    pub metadata: serde_json::Value,
    /// Owning user.
    pub owner_user_id: Uuid,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last update time.
    pub update_time: DateTime<Utc>,
    /// Etag.
    pub etag: String,
}

impl From<DocumentRow> for Document {
    fn from(row: DocumentRow) -> Self {
        Self {
            id: row.id,
            title: row.title,
            content: row.content,
            content_sha256: hex(&row.content_sha256),
            metadata: row.metadata,
            owner_user_id: row.owner_user_id,
            create_time: row.create_time,
            update_time: row.update_time,
            etag: etag(row.revision),
        }
    }
}

/// Validated values of a document's writable fields.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentInput {
    /// Title.
    pub title: String,
    /// Content.
    #[serde(with = "base64_bytes")]
    pub content: Vec<u8>,
    /// Metadata, a JSON object.
    pub metadata: serde_json::Value,
    /// Owning user.
    pub owner_user_id: Uuid,
}

impl DocumentInput {
    fn into_fields(self) -> DocumentFields {
        DocumentFields {
            content_sha256: Sha256::digest(&self.content).to_vec(),
            title: self.title,
            content: self.content,
            metadata: self.metadata,
            owner_user_id: self.owner_user_id,
        }
    }
}

/// New values for the fields an update names; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DocumentPatch {
    /// New title.
    pub title: Option<String>,
    /// New content.
    pub content: Option<Vec<u8>>,
    /// New metadata.
    pub metadata: Option<serde_json::Value>,
    /// New owner.
    pub owner_user_id: Option<Uuid>,
}

/// Checks a title: 1 to 500 characters, no control characters.
pub fn parse_title(field: &str, value: &str) -> Result<String> {
    let length = value.chars().count();
    if length == 0 {
        return Err(Error::invalid(Reason::FieldRequired, field, "is required"));
    }
    if length > 500 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            Reason::FieldMalformed,
            field,
            "must be at most 500 characters without control characters",
        ));
    }
    Ok(value.to_owned())
}

/// Checks content size.
pub fn parse_content(field: &str, content: Vec<u8>) -> Result<Vec<u8>> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(Error::invalid(
            Reason::ContentTooLarge,
            field,
            format!("is {} bytes; the maximum is {MAX_CONTENT_BYTES}", content.len()),
        ));
    }
    Ok(content)
}

/// Checks metadata: a JSON object of at most [`MAX_METADATA_BYTES`].
pub fn parse_metadata(field: &str, metadata: serde_json::Value) -> Result<serde_json::Value> {
    let size = serde_json::to_vec(&metadata).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            Reason::MetadataTooLarge,
            field,
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(metadata)
}

/// One page of documents.
#[derive(Debug, Clone)]
pub struct DocumentPage {
    /// The documents.
    pub documents: Vec<Document>,
    /// Token of the next page, empty if this is the last.
    pub next_page_token: String,
}

/// The documents of tenants.
#[derive(Clone)]
pub struct Documents {
    database: TenantDb,
}

impl Documents {
    /// Documents stored through `database`.
    pub fn new(database: TenantDb) -> Self {
        Self { database }
    }

    /// Creates a document, exactly once per `request_id`.
    pub async fn create(&self, context: &TenantContext, input: DocumentInput, request_id: &str) -> Result<Document> {
        let key = RequestKey::new(idempotency::Scope::Tenant, "CreateDocument", request_id, &input)?;
        let scope = QuotaScope::of(context);
        self.database
            .run(context, async move |transaction| {
                    if let Some(replay) = idempotency::begin::<Document>(transaction, &key).await? {
                        return Ok(replay);
                    }
                    let row = crate::db::documents::insert(transaction, Uuid::now_v7(), input.into_fields())
                        .await
                        .map_err(map_database_error)?;
                    quotas::charge(transaction, &scope, Quota::Documents, 1).await?;
                    quotas::charge(transaction, &scope, Quota::DocumentBytes, content_bytes(&row.content)).await?;
                    let document = Document::from(row);
                    let details = serde_json::json!({ "owner_user_id": document.owner_user_id, "content_sha256": document.content_sha256 });
                    audit::record(transaction, "document.create", "document", document.id, details).await?;
                    idempotency::finish(transaction, &key, &document).await?;
                    Ok(document)
                })
            .await
    }

    /// Gets a document of the context's tenant.
    pub async fn get(&self, context: &TenantContext, id: Uuid) -> Result<Document> {
        let row = self
            .database
            .read(context, async move |transaction| Ok(crate::db::documents::find(transaction, id).await?))
            .await?;
        Ok(row.ok_or_else(document_not_found)?.into())
    }

    /// Lists the context's tenant's documents in creation order, optionally one owner's.
    pub async fn list(
        &self,
        context: &TenantContext,
        owner: Option<Uuid>,
        page_size: i64,
        page_token: &str,
    ) -> Result<DocumentPage> {
        let scope = context.tenant_id();
        let filter = fingerprint(&format!("owner={}", owner.map(|owner| owner.to_string()).unwrap_or_default()));
        let after = PageToken::decode(page_token, scope, filter)?;
        let (rows, more) = self
            .database
            .read_steps(context, async move |transaction| {
                let sizes = crate::db::documents::list_sizes(transaction, owner, after, page_size + 1).await?;
                let (ids, more) = fit_page(&sizes, page_size, MAX_PAGE_CONTENT_BYTES);
                Ok((crate::db::documents::find_many(transaction, &ids).await?, more))
            })
            .await?;
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => PageToken { scope, filter, after: last.id }.encode(),
            _ => String::new(),
        };
        Ok(DocumentPage { documents: rows.into_iter().map(Document::from).collect(), next_page_token })
    }

    /// Updates the fields a patch names.
    pub async fn update(
        &self,
        context: &TenantContext,
        id: Uuid,
        expected_revision: Option<i64>,
        patch: DocumentPatch,
    ) -> Result<Document> {
        let scope = QuotaScope::of(context);
        let row = self
            .database
            .run(context, async move |transaction| {
                let current = crate::db::documents::lock(transaction, id).await?.ok_or_else(document_not_found)?;
                let size_before = content_bytes(&current.content);
                check_etag(expected_revision, current.revision)?;
                let mut changed = Vec::new();
                for (name, present) in [
                    ("title", patch.title.is_some()),
                    ("content", patch.content.is_some()),
                    ("metadata", patch.metadata.is_some()),
                    ("owner_user_id", patch.owner_user_id.is_some()),
                ] {
                    if present {
                        changed.push(name);
                    }
                }
                let input = DocumentInput {
                    title: patch.title.unwrap_or(current.title),
                    content: patch.content.unwrap_or(current.content),
                    metadata: patch.metadata.unwrap_or(current.metadata),
                    owner_user_id: patch.owner_user_id.unwrap_or(current.owner_user_id),
                };
                let row = crate::db::documents::save(transaction, id, input.into_fields())
                    .await
                    .map_err(map_database_error)?;
                let growth = content_bytes(&row.content) - size_before;
                quotas::adjust(transaction, &scope, Quota::DocumentBytes, growth).await?;
                audit::record(transaction, "document.update", "document", id, audit::changed_fields(&changed)).await?;
                Ok(row)
            })
            .await?;
        Ok(row.into())
    }

    /// Deletes a document.
    pub async fn delete(&self, context: &TenantContext, id: Uuid, expected_revision: Option<i64>) -> Result<()> {
        let scope = QuotaScope::of(context);
        self.database
            .run(context, async move |transaction| {
                let current = crate::db::documents::lock(transaction, id).await?.ok_or_else(document_not_found)?;
                check_etag(expected_revision, current.revision)?;
                crate::db::documents::delete(transaction, id).await?;
                quotas::release(transaction, &scope, Quota::Documents, 1).await?;
                quotas::release(transaction, &scope, Quota::DocumentBytes, content_bytes(&current.content)).await?;
                audit::record(transaction, "document.delete", "document", id, serde_json::json!({})).await?;
                Ok(())
            })
            .await
    }
}

/// The ids that fit in one page: at most `page_size`, and no more content than `budget`
/// bytes (but at least one). `sizes` holds up to `page_size + 1` rows; whether more remain
/// is returned beside the ids.
fn fit_page(sizes: &[(Uuid, i32)], page_size: i64, budget: i64) -> (Vec<Uuid>, bool) {
    let page_size = usize::try_from(page_size).unwrap_or(usize::MAX);
    let mut ids = Vec::new();
    let mut used = 0i64;
    for (id, size) in sizes.iter().take(page_size) {
        used += i64::from(*size);
        if !ids.is_empty() && used > budget {
            break;
        }
        ids.push(*id);
    }
    let more = sizes.len() > ids.len();
    (ids, more)
}

/// The size of content as the `document_bytes` quota counts it.
fn content_bytes(content: &[u8]) -> i64 {
    i64::try_from(content.len()).unwrap_or(i64::MAX)
}

fn document_not_found() -> Error {
    Error::new(Reason::DocumentNotFound)
}

fn map_database_error(error: diesel::result::Error) -> Error {
    error::from_database(error, constraint_error)
}

/// What a violated constraint means when documents are written; `None` for a constraint
/// this module does not expect (INTERNAL). Public so that tests/api/citus.rs can check every
/// constraint of the schema has a deliberate answer.
pub fn constraint_error(constraint: &str) -> Option<Error> {
    match constraint {
        // Another tenant's user fails this foreign key exactly like a missing user.
        "documents_owner_fkey" => {
            Some(Error::invalid(Reason::OwnerNotFound, "document.owner_user_id", "no such user in this tenant"))
        }
        "documents_pkey" => Some(Error::already_exists(Reason::DocumentAlreadyExists, "document.id")),
        "documents_tenant_id_fkey" => Some(Error::new(Reason::TenantNotFound)),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Bytes as base64 in JSON (idempotency snapshots), not as an array of numbers.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_at_its_size_or_its_byte_budget_but_never_empty() {
        let id = |n: u128| Uuid::from_u128(n);
        let sizes = [(id(1), 10), (id(2), 10), (id(3), 10)];
        assert_eq!(fit_page(&sizes, 2, 100), (vec![id(1), id(2)], true));
        assert_eq!(fit_page(&sizes[..2], 2, 100), (vec![id(1), id(2)], false));
        assert_eq!(fit_page(&sizes, 5, 15), (vec![id(1)], true));
        assert_eq!(fit_page(&[(id(1), 500)], 5, 15), (vec![id(1)], false), "one oversized document still fits alone");
        assert_eq!(fit_page(&[], 5, 15), (vec![], false));
    }
}
