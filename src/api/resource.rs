//! The adapter half of the resource kit: the five standard methods (AIP-131 to 135) of a
//! resource of [`crate::domain::resource`], so a resource's adapter only converts its
//! messages. Each takes the request apart with a closure, validates, calls [`Resources`]
//! and converts the result.

use tonic::{Request, Response, Status};

use super::{required, update_mask};
use crate::db::resource::Patch;
use crate::domain::resource::{FieldsOf, Resource, Resources};
use crate::domain::{UpdateMask, page, parse_etag, parse_id};
use crate::error::{Result, Violations};
use crate::tenancy::TenantContext;

/// A resource message with an id and an etag.
pub(super) trait Identified {
    /// The `id` field.
    fn id(&self) -> &str;
    /// The `etag` field.
    fn etag(&self) -> &str;
}

/// Implements [`Identified`] for messages with `id` and `etag` fields.
macro_rules! identified {
    ($($message:ty),*) => {$(
        impl $crate::api::resource::Identified for $message {
            fn id(&self) -> &str {
                &self.id
            }

            fn etag(&self) -> &str {
                &self.etag
            }
        }
    )*};
}
pub(super) use identified;

/// A resource's writable fields and how an adapter reads them from its message: the
/// message's name, the updatable fields, and the patch of the fields a mask names (each
/// invalid one recorded). A create reads every field through the same patch.
pub(super) struct Fields<M, X> {
    /// The message's field name in requests (`setting`).
    pub(super) name: &'static str,
    /// The fields an update may name.
    pub(super) updatable: &'static [&'static str],
    /// Reads the patch.
    pub(super) patch: fn(M, &UpdateMask, &mut Violations) -> X,
}

/// Create: `parts` gives the message (required) and the request id.
pub(super) async fn create<R: Resource, Q, M, X, P>(
    resources: &Resources<R>,
    request: Request<Q>,
    fields: Fields<M, X>,
    parts: impl FnOnce(Q) -> (Option<M>, String),
    to_proto: impl FnOnce(R) -> P,
) -> Result<Response<P>, Status>
where
    X: Patch<FieldsOf<R>>,
    FieldsOf<R>: serde::Serialize,
{
    let context = TenantContext::from_request(&request)?;
    let (message, request_id) = parts(request.into_inner());
    let mut checks = Violations::new();
    let patch = (fields.patch)(required(fields.name, message)?, &UpdateMask::all(fields.updatable), &mut checks);
    let input = checks.finish(|| patch.complete())?;
    Ok(Response::new(to_proto(resources.create(&context, &request_id, input).await?)))
}

/// Get: `id` gives the id.
pub(super) async fn get<R: Resource, Q, P>(
    resources: &Resources<R>,
    request: Request<Q>,
    id: impl FnOnce(Q) -> String,
    to_proto: impl FnOnce(R) -> P,
) -> Result<Response<P>, Status> {
    let context = TenantContext::from_request(&request)?;
    let id = parse_id("id", &id(request.into_inner()))?;
    Ok(Response::new(to_proto(resources.get(&context, id).await?)))
}

/// List: `parts` gives the page size and token; `respond` builds the response message.
pub(super) async fn list<R: Resource, Q, P>(
    resources: &Resources<R>,
    request: Request<Q>,
    parts: impl FnOnce(Q) -> (i32, String),
    respond: impl FnOnce(Vec<R>, String) -> P,
) -> Result<Response<P>, Status> {
    let context = TenantContext::from_request(&request)?;
    let (page_size, page_token) = parts(request.into_inner());
    let page = resources.list(&context, page::page_size(page_size)?, &page_token).await?;
    Ok(Response::new(respond(page.items, page.next_page_token)))
}

/// Update: `parts` gives the message (required) and the mask.
pub(super) async fn update<R: Resource, Q, M: Identified, X, P>(
    resources: &Resources<R>,
    request: Request<Q>,
    fields: Fields<M, X>,
    parts: impl FnOnce(Q) -> (Option<M>, Option<prost_types::FieldMask>),
    to_proto: impl FnOnce(R) -> P,
) -> Result<Response<P>, Status>
where
    X: Patch<FieldsOf<R>>,
{
    let context = TenantContext::from_request(&request)?;
    let (message, mask) = parts(request.into_inner());
    let mask = update_mask(mask, fields.updatable)?;
    let message = required(fields.name, message)?;
    let mut checks = Violations::new();
    let id = checks.check(parse_id(&format!("{}.id", fields.name), message.id()));
    let expected_revision = checks.check(parse_etag(message.etag()));
    let patch = (fields.patch)(message, &mask, &mut checks);
    let (id, expected_revision) = checks.finish(|| Some((id?, expected_revision?)))?;
    Ok(Response::new(to_proto(resources.update(&context, id, expected_revision, patch).await?)))
}

/// Delete: `parts` gives the id and the etag.
pub(super) async fn delete<R: Resource, Q>(
    resources: &Resources<R>,
    request: Request<Q>,
    parts: impl FnOnce(Q) -> (String, String),
) -> Result<Response<()>, Status> {
    let context = TenantContext::from_request(&request)?;
    let (id, etag) = parts(request.into_inner());
    let (id, expected_revision) = (parse_id("id", &id)?, parse_etag(&etag)?);
    resources.delete(&context, id, expected_revision).await?;
    Ok(Response::new(()))
}
