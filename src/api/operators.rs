//! `tenantd.v1.OperatorService`: the control plane's operators.

use tonic::{Request, Response, Status};

use super::{required, timestamp};
use crate::domain::operators::{NewOperator, Operator, Operators};
use crate::domain::{page, parse_display_name, parse_id};
use crate::error::{Error, Reason, Result, Violations};
use crate::proto::operator::Role as ProtoRole;
use crate::proto::operator_service_server::OperatorService;
use crate::proto::{self};
use crate::tenancy::{OperatorRole, RequestContext};

/// The operators adapter.
pub struct OperatorApi {
    operators: Operators,
}

impl OperatorApi {
    /// Serves `operators`.
    pub fn new(operators: Operators) -> Self {
        Self { operators }
    }
}

fn to_proto(operator: Operator) -> proto::Operator {
    let role = match operator.role {
        Some(OperatorRole::Admin) => ProtoRole::Admin,
        Some(OperatorRole::Operator) => ProtoRole::Operator,
        Some(OperatorRole::Viewer) => ProtoRole::Viewer,
        None => ProtoRole::Unspecified,
    };
    proto::Operator {
        id: operator.id.to_string(),
        display_name: operator.display_name,
        role: role as i32,
        create_time: Some(timestamp(operator.create_time)),
        created_by: operator.created_by,
        revoke_time: operator.revoke_time.map(timestamp),
        revoked_by: operator.revoked_by.unwrap_or_default(),
    }
}

fn role(value: i32) -> Result<OperatorRole> {
    match ProtoRole::try_from(value) {
        Ok(ProtoRole::Admin) => Ok(OperatorRole::Admin),
        Ok(ProtoRole::Operator) => Ok(OperatorRole::Operator),
        Ok(ProtoRole::Viewer) => Ok(OperatorRole::Viewer),
        Ok(ProtoRole::Unspecified) => Err(Error::invalid(Reason::FieldRequired, "operator.role", "is required")),
        Err(_) => Err(Error::invalid(Reason::RoleInvalid, "operator.role", "must be ADMIN, OPERATOR or VIEWER")),
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn create_operator(
        &self,
        request: Request<proto::CreateOperatorRequest>,
    ) -> Result<Response<proto::CreateOperatorResponse>, Status> {
        let context = RequestContext::from_request(&request)?;
        let operator = required("operator", request.into_inner().operator)?;
        let mut checks = Violations::new();
        let display_name = checks.check(parse_display_name("operator.display_name", &operator.display_name, true));
        let role = checks.check(role(operator.role));
        let new = checks.finish(|| Some(NewOperator { display_name: display_name?, role: role? }))?;
        let created = self.operators.create(context, new).await?;
        Ok(Response::new(proto::CreateOperatorResponse {
            operator: Some(to_proto(created.operator)),
            secret: created.secret,
        }))
    }

    async fn get_operator(
        &self,
        request: Request<proto::GetOperatorRequest>,
    ) -> Result<Response<proto::Operator>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        Ok(Response::new(to_proto(self.operators.get(id).await?)))
    }

    async fn list_operators(
        &self,
        request: Request<proto::ListOperatorsRequest>,
    ) -> Result<Response<proto::ListOperatorsResponse>, Status> {
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let page = self.operators.list(page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListOperatorsResponse {
            operators: page.operators.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_operator(
        &self,
        request: Request<proto::RevokeOperatorRequest>,
    ) -> Result<Response<proto::Operator>, Status> {
        let context = RequestContext::from_request(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        Ok(Response::new(to_proto(self.operators.revoke(context, id).await?)))
    }
}
