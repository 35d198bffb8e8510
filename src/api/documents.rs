//! `tenantd.v1.DocumentService` (data plane).

use tonic::{Request, Response, Status};

use super::{json_to_struct, required, struct_to_json, timestamp, update_mask};
use crate::domain::documents::{
    Document, DocumentInput, DocumentPatch, Documents, UPDATABLE_FIELDS, parse_content, parse_metadata, parse_title,
};
use crate::domain::{page, parse_etag, parse_id};
use crate::error::{Result, Violations};
use crate::proto::document_service_server::DocumentService;
use crate::proto::{self};
use crate::tenancy::TenantContext;

/// The data-plane adapter for documents.
pub struct DocumentApi {
    documents: Documents,
}

impl DocumentApi {
    /// Serves `documents`.
    pub fn new(documents: Documents) -> Self {
        Self { documents }
    }
}

fn to_proto(document: Document) -> proto::Document {
    proto::Document {
        id: document.id.to_string(),
        title: document.title,
        content: document.content,
        content_sha256: document.content_sha256,
        metadata: Some(json_to_struct(document.metadata)),
        owner_user_id: document.owner_user_id.to_string(),
        create_time: Some(timestamp(document.create_time)),
        update_time: Some(timestamp(document.update_time)),
        etag: document.etag,
    }
}

fn metadata(value: Option<prost_types::Struct>) -> Result<serde_json::Value> {
    let json = struct_to_json("document.metadata", value.unwrap_or_default())?;
    parse_metadata("document.metadata", json)
}

#[tonic::async_trait]
impl DocumentService for DocumentApi {
    async fn create_document(
        &self,
        request: Request<proto::CreateDocumentRequest>,
    ) -> Result<Response<proto::Document>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let document = required("document", request.document)?;
        let mut checks = Violations::new();
        let title = checks.check(parse_title("document.title", &document.title));
        let content = checks.check(parse_content("document.content", document.content));
        let metadata = checks.check(metadata(document.metadata));
        let owner_user_id = checks.check(parse_id("document.owner_user_id", &document.owner_user_id));
        let input = checks.finish(|| {
            Some(DocumentInput { title: title?, content: content?, metadata: metadata?, owner_user_id: owner_user_id? })
        })?;
        Ok(Response::new(to_proto(self.documents.create(&context, input, &request.request_id).await?)))
    }

    async fn get_document(
        &self,
        request: Request<proto::GetDocumentRequest>,
    ) -> Result<Response<proto::Document>, Status> {
        let context = TenantContext::from_request(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        Ok(Response::new(to_proto(self.documents.get(&context, id).await?)))
    }

    async fn list_documents(
        &self,
        request: Request<proto::ListDocumentsRequest>,
    ) -> Result<Response<proto::ListDocumentsResponse>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let owner = if request.owner_user_id.is_empty() {
            None
        } else {
            Some(parse_id("owner_user_id", &request.owner_user_id)?)
        };
        let page = self.documents.list(&context, owner, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListDocumentsResponse {
            documents: page.documents.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_document(
        &self,
        request: Request<proto::UpdateDocumentRequest>,
    ) -> Result<Response<proto::Document>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let mask = update_mask(request.update_mask, UPDATABLE_FIELDS)?;
        let document = required("document", request.document)?;
        let mut checks = Violations::new();
        let id = checks.check(parse_id("document.id", &document.id));
        let expected_revision = checks.check(parse_etag(&document.etag));
        let mut patch = DocumentPatch::default();
        if mask.contains("title") {
            patch.title = checks.check(parse_title("document.title", &document.title));
        }
        if mask.contains("content") {
            patch.content = checks.check(parse_content("document.content", document.content));
        }
        if mask.contains("metadata") {
            patch.metadata = checks.check(metadata(document.metadata));
        }
        if mask.contains("owner_user_id") {
            patch.owner_user_id = checks.check(parse_id("document.owner_user_id", &document.owner_user_id));
        }
        let (id, expected_revision) = checks.finish(|| Some((id?, expected_revision?)))?;
        Ok(Response::new(to_proto(self.documents.update(&context, id, expected_revision, patch).await?)))
    }

    async fn delete_document(&self, request: Request<proto::DeleteDocumentRequest>) -> Result<Response<()>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let id = parse_id("id", &request.id)?;
        let expected_revision = parse_etag(&request.etag)?;
        self.documents.delete(&context, id, expected_revision).await?;
        Ok(Response::new(()))
    }
}
