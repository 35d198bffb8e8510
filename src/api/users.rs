//! `tenantd.v1.UserService`: the first data-plane service. The tenant layer has already
//! authenticated the caller and resolved the tenant; each handler takes the
//! [`TenantContext`] from the request and passes it down explicitly.

use tonic::{Request, Response, Status};

use super::{required, timestamp, update_mask};
use crate::domain::users::{Role, UPDATABLE_FIELDS, User, UserInput, UserPatch, Users, parse_email};
use crate::domain::{page, parse_display_name, parse_etag, parse_id};
use crate::error::{Error, Reason, Result, Violations};
use crate::proto::user::Role as ProtoRole;
use crate::proto::user_service_server::UserService;
use crate::proto::{self};
use crate::tenancy::TenantContext;

/// The data-plane adapter for users.
pub struct UserApi {
    users: Users,
}

impl UserApi {
    /// Serves `users`.
    pub fn new(users: Users) -> Self {
        Self { users }
    }
}

fn to_proto(user: User) -> proto::User {
    let role = match user.role {
        Role::Viewer => ProtoRole::Viewer,
        Role::Member => ProtoRole::Member,
        Role::Admin => ProtoRole::Admin,
    };
    proto::User {
        id: user.id.to_string(),
        email: user.email,
        display_name: user.display_name,
        role: role as i32,
        create_time: Some(timestamp(user.create_time)),
        update_time: Some(timestamp(user.update_time)),
        etag: user.etag,
    }
}

/// A role from the wire; unspecified means MEMBER on create and is rejected on update.
fn role(value: i32, default: Option<Role>) -> Result<Role> {
    match (ProtoRole::try_from(value), default) {
        (Ok(ProtoRole::Viewer), _) => Ok(Role::Viewer),
        (Ok(ProtoRole::Member), _) => Ok(Role::Member),
        (Ok(ProtoRole::Admin), _) => Ok(Role::Admin),
        (Ok(ProtoRole::Unspecified), Some(default)) => Ok(default),
        (Ok(ProtoRole::Unspecified), None) => Err(Error::invalid(Reason::FieldRequired, "user.role", "is required")),
        (Err(_), _) => Err(Error::invalid(Reason::RoleInvalid, "user.role", "is not a User.Role value")),
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(&self, request: Request<proto::CreateUserRequest>) -> Result<Response<proto::User>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let user = required("user", request.user)?;
        let mut checks = Violations::new();
        let email = checks.check(parse_email("user.email", &user.email));
        let display_name = checks.check(parse_display_name("user.display_name", &user.display_name, false));
        let role = checks.check(role(user.role, Some(Role::Member)));
        let input = checks.finish(|| Some(UserInput { email: email?, display_name: display_name?, role: role? }))?;
        Ok(Response::new(to_proto(self.users.create(&context, &request.request_id, input).await?)))
    }

    async fn get_user(&self, request: Request<proto::GetUserRequest>) -> Result<Response<proto::User>, Status> {
        let context = TenantContext::from_request(&request)?;
        let id = parse_id("id", &request.into_inner().id)?;
        Ok(Response::new(to_proto(self.users.get(&context, id).await?)))
    }

    async fn list_users(
        &self,
        request: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let page_size = page::page_size(request.page_size)?;
        let page = self.users.list(&context, page_size, &request.page_token).await?;
        Ok(Response::new(proto::ListUsersResponse {
            users: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_user(&self, request: Request<proto::UpdateUserRequest>) -> Result<Response<proto::User>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let mask = update_mask(request.update_mask, UPDATABLE_FIELDS)?;
        let user = required("user", request.user)?;
        let mut checks = Violations::new();
        let id = checks.check(parse_id("user.id", &user.id));
        let expected_revision = checks.check(parse_etag(&user.etag));
        let patch = UserPatch {
            email: mask.contains("email").then(|| checks.check(parse_email("user.email", &user.email))).flatten(),
            display_name: mask
                .contains("display_name")
                .then(|| checks.check(parse_display_name("user.display_name", &user.display_name, false)))
                .flatten(),
            role: mask
                .contains("role")
                .then(|| checks.check(role(user.role, None)))
                .flatten()
                .map(|role| role.as_str().to_owned()),
        };
        let (id, expected_revision) = checks.finish(|| Some((id?, expected_revision?)))?;
        Ok(Response::new(to_proto(self.users.update(&context, id, expected_revision, patch).await?)))
    }

    async fn delete_user(&self, request: Request<proto::DeleteUserRequest>) -> Result<Response<()>, Status> {
        let context = TenantContext::from_request(&request)?;
        let request = request.into_inner();
        let id = parse_id("id", &request.id)?;
        let expected_revision = parse_etag(&request.etag)?;
        self.users.delete(&context, id, expected_revision).await?;
        Ok(Response::new(()))
    }
}
