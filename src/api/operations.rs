//! `google.longrunning.Operations`: the control plane's long-running operations (AIP-151).
//! Names are `operations/{uuid}`; the metadata is `tenantd.v1.OperationMetadata`, the
//! response of a kind without a resource `tenantd.v1.OperationResult`.

use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};

use super::{json_to_struct, timestamp};
use crate::domain::operations::{Operation, OperationFilter, Operations};
use crate::domain::{page, parse_id};
use crate::error::{Error, Reason, Result};
use crate::proto::longrunning::operations_server::Operations as OperationsService;
use crate::proto::longrunning::{self, operation};
use crate::proto::{self};
use crate::tenancy::RequestContext;

/// The collection every operation name starts with.
const COLLECTION: &str = "operations/";

/// The operations adapter.
pub struct OperationApi {
    operations: Operations,
    max_wait: Duration,
}

impl OperationApi {
    /// Serves `operations`; WaitOperation waits at most `max_wait` (keep it under the RPC
    /// timeout, so that a wait answers with the operation rather than DEADLINE_EXCEEDED).
    pub fn new(operations: Operations, max_wait: Duration) -> Self {
        Self { operations, max_wait }
    }
}

/// A `google.protobuf.Any` holding `message` of the fully-qualified type `type_name`.
fn any(type_name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{type_name}"), value: message.encode_to_vec() }
}

/// The proto of an operation.
pub(crate) fn to_proto(operation: Operation) -> longrunning::Operation {
    let metadata = proto::OperationMetadata {
        kind: operation.kind.as_str().to_owned(),
        tenant_id: operation.tenant_id.map(|id| id.to_string()).unwrap_or_default(),
        phase: operation.phase,
        progress_percent: operation.progress_percent,
        details: Some(json_to_struct(operation.progress)),
        cancel_requested: operation.cancel_requested,
        attempts: operation.attempts,
        created_by: operation.created_by,
        create_time: Some(timestamp(operation.create_time)),
        update_time: Some(timestamp(operation.update_time)),
        end_time: operation.done_time.map(timestamp),
    };
    let result = match (operation.response, operation.error) {
        (Some(response), _) => Some(operation::Result::Response(any(
            "tenantd.v1.OperationResult",
            &proto::OperationResult { result: Some(json_to_struct(response)) },
        ))),
        (None, Some(error)) => {
            let info = tonic_types::pb::ErrorInfo {
                reason: error.reason,
                domain: crate::error::ERROR_DOMAIN.to_owned(),
                metadata: Default::default(),
            };
            Some(operation::Result::Error(tonic_types::pb::Status {
                code: error.code as i32,
                message: error.message,
                details: vec![any("google.rpc.ErrorInfo", &info)],
            }))
        }
        (None, None) => None,
    };
    longrunning::Operation {
        name: format!("{COLLECTION}{}", operation.id),
        metadata: Some(any("tenantd.v1.OperationMetadata", &metadata)),
        done: operation.state.done(),
        result,
    }
}

/// The id in an operation name.
pub(crate) fn operation_id(name: &str) -> Result<uuid::Uuid> {
    if name.is_empty() {
        return Err(Error::invalid(Reason::FieldRequired, "name", "is required"));
    }
    let id = name
        .strip_prefix(COLLECTION)
        .ok_or_else(|| Error::invalid(Reason::FieldMalformed, "name", "must be operations/{id}"))?;
    parse_id("name", id)
}

/// The filter of ListOperations: empty, or `tenant_id = "<uuid>"`.
fn filter(text: &str) -> Result<OperationFilter> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(OperationFilter::default());
    }
    let invalid = || Error::invalid(Reason::FieldMalformed, "filter", "must be empty or tenant_id = \"<uuid>\"");
    let (field, value) = text.split_once('=').ok_or_else(invalid)?;
    let value = value.trim().strip_prefix('"').and_then(|value| value.strip_suffix('"')).ok_or_else(invalid)?;
    if field.trim() != "tenant_id" {
        return Err(invalid());
    }
    Ok(OperationFilter { tenant_id: Some(parse_id("filter", value)?) })
}

#[tonic::async_trait]
impl OperationsService for OperationApi {
    async fn list_operations(
        &self,
        request: Request<longrunning::ListOperationsRequest>,
    ) -> Result<Response<longrunning::ListOperationsResponse>, Status> {
        let request = request.into_inner();
        if !(request.name.is_empty() || request.name == "operations") {
            return Err(Error::invalid(Reason::FieldMalformed, "name", "must be empty or operations").into());
        }
        let filter = filter(&request.filter)?;
        let page_size = page::page_size(request.page_size)?;
        let page = self.operations.list(filter, page_size, &request.page_token).await?;
        Ok(Response::new(longrunning::ListOperationsResponse {
            operations: page.operations.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_operation(
        &self,
        request: Request<longrunning::GetOperationRequest>,
    ) -> Result<Response<longrunning::Operation>, Status> {
        let id = operation_id(&request.get_ref().name)?;
        Ok(Response::new(to_proto(self.operations.get(id).await?)))
    }

    async fn delete_operation(
        &self,
        request: Request<longrunning::DeleteOperationRequest>,
    ) -> Result<Response<()>, Status> {
        let context = RequestContext::from_request(&request)?;
        let id = operation_id(&request.get_ref().name)?;
        self.operations.delete(&context, id).await?;
        Ok(Response::new(()))
    }

    async fn cancel_operation(
        &self,
        request: Request<longrunning::CancelOperationRequest>,
    ) -> Result<Response<()>, Status> {
        let context = RequestContext::from_request(&request)?;
        let id = operation_id(&request.get_ref().name)?;
        self.operations.cancel(&context, id).await?;
        Ok(Response::new(()))
    }

    async fn wait_operation(
        &self,
        request: Request<longrunning::WaitOperationRequest>,
    ) -> Result<Response<longrunning::Operation>, Status> {
        let request = request.into_inner();
        let id = operation_id(&request.name)?;
        let timeout = match request.timeout {
            None => self.max_wait,
            Some(timeout) => Duration::try_from(timeout)
                .map_err(|_| Error::invalid(Reason::FieldMalformed, "timeout", "must not be negative"))?
                .min(self.max_wait),
        };
        Ok(Response::new(to_proto(self.operations.wait(id, timeout).await?)))
    }
}
