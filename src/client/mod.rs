//! Each subcommand speaks the server's own gRPC API (grpc.health.v1,
//! `tenantd.v1.TenantService` and `tenantd.v1.OperatorService`), so an operator needs no
//! grpcurl.
//!
//! Exit status policy, for scripts and container healthchecks:
//! - [`EXIT_OK`] (0): the call succeeded (`health`: the service is SERVING);
//! - [`EXIT_REFUSED`] (1): the server answered with a gRPC error, printed on stderr with its
//!   code, message, `google.rpc.ErrorInfo` reason and field violations (`health`: the service
//!   is NOT_SERVING, UNKNOWN, or unknown to the server, printed as SERVICE_UNKNOWN);
//! - [`EXIT_UNREACHABLE`] (2): the server could not be reached or did not answer in time, or
//!   the command line is unusable (clap's own usage errors exit 2 as well).
//!
//! Results go to stdout (a table, or `--output json`); everything else goes to stderr.

pub mod args;
mod connection;
pub mod events;
mod output;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::ExposeSecret;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use self::args::{
    ChannelArg, HealthArgs, KeyScopeArg, KeysArgs, KeysCommand, OperationsArgs, OperationsCommand, OperatorRoleArg,
    OperatorsArgs, OperatorsCommand, PageArgs, ResolveArgs, TenantStateArg, TenantsArgs, TenantsCommand,
};
use self::connection::{Failure, call, connect, finish, operations_client, operator_client, tenant_client};
use self::output::Shown;
use crate::proto::{self, api_key, get_tenant_request, operator, resolve_tenant_request, tenant};

/// Exit status: success (`health`: SERVING).
pub const EXIT_OK: u8 = 0;
/// Exit status: the server answered with an error (`health`: not SERVING).
pub const EXIT_REFUSED: u8 = 1;
/// Exit status: the server could not be reached in time, or the command line is unusable.
pub const EXIT_UNREACHABLE: u8 = 2;

/// How long a health check may take once connected.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// `tenantd health`: prints the grpc.health.v1 status of `--service` and exits 0 only if it is
/// SERVING (see the module documentation for the other exit statuses).
pub async fn health(args: HealthArgs) -> ExitCode {
    let channel = match connect(&args.server).await {
        Ok(channel) => channel,
        Err(failure) => return failure.report(),
    };
    let mut request = tonic::Request::new(HealthCheckRequest { service: args.service.clone() });
    request.set_timeout(HEALTH_TIMEOUT);
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, HealthClient::new(channel).check(request)).await;
    let status = match answer {
        Err(_) => return Failure::Unreachable(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs())).report(),
        // The health protocol answers NOT_FOUND for a service name the server does not know.
        Ok(Err(status)) if status.code() == Code::NotFound => ServingStatus::ServiceUnknown,
        Ok(Err(status)) => {
            Failure::from_status(status).report();
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        Ok(Ok(response)) => ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown),
    };
    let _ = writeln!(std::io::stdout().lock(), "{}", status.as_str_name());
    ExitCode::from(if status == ServingStatus::Serving { EXIT_OK } else { EXIT_REFUSED })
}

/// `tenantd tenants ...`: one TenantService call (or one per page with `--all`).
pub async fn tenants(args: TenantsArgs) -> ExitCode {
    let format = args.client.output;
    finish(run_tenants(args).await, format)
}

/// `tenantd keys ...`: API keys of a tenant.
pub async fn keys(args: KeysArgs) -> ExitCode {
    let format = args.client.output;
    finish(run_keys(args).await, format)
}

/// `tenantd operators ...`: the platform's named credentials.
pub async fn operators(args: OperatorsArgs) -> ExitCode {
    let format = args.client.output;
    finish(run_operators(args).await, format)
}

/// `tenantd resolve`: the tenant named by one identifier, as edge gateways resolve it.
pub async fn resolve(args: ResolveArgs) -> ExitCode {
    let format = args.client.output;
    finish(run_resolve(args).await, format)
}

async fn run_tenants(args: TenantsArgs) -> Result<Shown, Failure> {
    let mut client = tenant_client(&args.client).await?;
    let tenant = match args.command {
        TenantsCommand::Create(create) => {
            let request = proto::CreateTenantRequest {
                tenant: Some(proto::Tenant {
                    slug: create.slug,
                    display_name: create.display_name,
                    labels: create.labels.into_iter().collect(),
                    domains: create.domains,
                    channel_bindings: create.channels.into_iter().map(channel_binding).collect(),
                    isolation_tier: match create.isolation_tier {
                        args::TierArg::Pooled => proto::tenant::IsolationTier::Pooled,
                        args::TierArg::Schema => proto::tenant::IsolationTier::Schema,
                    } as i32,
                    plan: create.plan.unwrap_or_default(),
                    ..Default::default()
                }),
                request_id: create.request_id.unwrap_or_default(),
            };
            call(client.create_tenant(request)).await?
        }
        TenantsCommand::Get(get) => {
            let selector = match (get.id, get.slug) {
                (Some(id), _) => get_tenant_request::Selector::Id(id),
                (None, Some(slug)) => get_tenant_request::Selector::Slug(slug),
                (None, None) => return Err(Failure::Usage("give a tenant id or --slug".to_owned())),
            };
            call(client.get_tenant(proto::GetTenantRequest { selector: Some(selector) })).await?
        }
        TenantsCommand::List(list) => {
            let state = list.state.map_or(tenant::State::Unspecified, tenant_state) as i32;
            let (tenants, next_page_token) = all_pages(&list.page, |page_size, page_token| {
                let mut client = client.clone();
                async move {
                    let request = proto::ListTenantsRequest { page_size, page_token, state };
                    let response = call(client.list_tenants(request)).await?;
                    Ok((response.tenants, response.next_page_token))
                }
            })
            .await?;
            return Ok(Shown::Tenants { tenants, next_page_token });
        }
        TenantsCommand::Update(update) => {
            let mut paths = Vec::new();
            let mut tenant =
                proto::Tenant { id: update.id, etag: update.etag.unwrap_or_default(), ..Default::default() };
            if let Some(display_name) = update.display_name {
                tenant.display_name = display_name;
                paths.push("display_name");
            }
            if !update.labels.is_empty() || update.clear_labels {
                tenant.labels = update.labels.into_iter().collect();
                paths.push("labels");
            }
            if !update.domains.is_empty() || update.clear_domains {
                tenant.domains = update.domains;
                paths.push("domains");
            }
            if !update.channels.is_empty() || update.clear_channels {
                tenant.channel_bindings = update.channels.into_iter().map(channel_binding).collect();
                paths.push("channel_bindings");
            }
            if update.plan.is_some() || update.clear_plan {
                tenant.plan = update.plan.unwrap_or_default();
                paths.push("plan");
            }
            let update_mask = prost_types::FieldMask { paths: paths.into_iter().map(str::to_owned).collect() };
            call(
                client
                    .update_tenant(proto::UpdateTenantRequest { tenant: Some(tenant), update_mask: Some(update_mask) }),
            )
            .await?
        }
        TenantsCommand::Suspend(target) => {
            let request = proto::SuspendTenantRequest { id: target.id, etag: target.etag.unwrap_or_default() };
            call(client.suspend_tenant(request)).await?
        }
        TenantsCommand::Resume(target) => {
            let request = proto::ResumeTenantRequest { id: target.id, etag: target.etag.unwrap_or_default() };
            call(client.resume_tenant(request)).await?
        }
        TenantsCommand::Delete(target) => {
            let request = proto::DeleteTenantRequest { id: target.id, etag: target.etag.unwrap_or_default() };
            call(client.delete_tenant(request)).await?
        }
        TenantsCommand::Move(target) => {
            let isolation_tier = match target.to {
                args::TierArg::Pooled => tenant::IsolationTier::Pooled,
                args::TierArg::Schema => tenant::IsolationTier::Schema,
            } as i32;
            let request = proto::MoveTenantRequest { id: target.id, isolation_tier };
            return Ok(Shown::Operation(call(client.move_tenant(request)).await?));
        }
    };
    Ok(Shown::Tenant(tenant))
}

/// `tenantd operations ...`: long-running operations (tenant moves).
pub async fn operations(args: OperationsArgs) -> ExitCode {
    let format = args.client.output;
    finish(run_operations(args).await, format)
}

/// `operations/<id>` from a name or a bare id.
fn operation_name(name: String) -> String {
    if name.starts_with("operations/") { name } else { format!("operations/{name}") }
}

async fn run_operations(args: OperationsArgs) -> Result<Shown, Failure> {
    use crate::proto::longrunning;
    let mut client = operations_client(&args.client).await?;
    let operation = match args.command {
        OperationsCommand::Get(target) => {
            let request = longrunning::GetOperationRequest { name: operation_name(target.name) };
            call(client.get_operation(request)).await?
        }
        OperationsCommand::Wait(target) => {
            let request = longrunning::WaitOperationRequest { name: operation_name(target.name), timeout: None };
            call(client.wait_operation(request)).await?
        }
        OperationsCommand::Cancel(target) => {
            let name = operation_name(target.name);
            call(client.cancel_operation(longrunning::CancelOperationRequest { name: name.clone() })).await?;
            call(client.get_operation(longrunning::GetOperationRequest { name })).await?
        }
        OperationsCommand::List(list) => {
            let filter = list.tenant.map(|tenant| format!("tenant_id = \"{tenant}\"")).unwrap_or_default();
            let (operations, next_page_token) = all_pages(&list.page, |page_size, page_token| {
                let mut client = client.clone();
                let filter = filter.clone();
                async move {
                    let request =
                        longrunning::ListOperationsRequest { page_size, page_token, filter, name: String::new() };
                    let page = call(client.list_operations(request)).await?;
                    Ok((page.operations, page.next_page_token))
                }
            })
            .await?;
            return Ok(Shown::Operations { operations, next_page_token });
        }
    };
    Ok(Shown::Operation(operation))
}

async fn run_keys(args: KeysArgs) -> Result<Shown, Failure> {
    let mut client = tenant_client(&args.client).await?;
    match args.command {
        KeysCommand::Create(create) => {
            let request = proto::CreateApiKeyRequest {
                tenant_id: create.tenant,
                api_key: Some(proto::ApiKey {
                    display_name: create.name,
                    scopes: create.scopes.into_iter().map(|scope| key_scope(scope) as i32).collect(),
                    expire_time: create.expire_time,
                    ..Default::default()
                }),
                request_id: create.request_id.unwrap_or_default(),
            };
            Ok(Shown::CreatedApiKey(call(client.create_api_key(request)).await?))
        }
        KeysCommand::List(list) => {
            let tenant_id = list.tenant;
            let (api_keys, next_page_token) = all_pages(&list.page, |page_size, page_token| {
                let mut client = client.clone();
                let tenant_id = tenant_id.clone();
                async move {
                    let request = proto::ListApiKeysRequest { tenant_id, page_size, page_token };
                    let response = call(client.list_api_keys(request)).await?;
                    Ok((response.api_keys, response.next_page_token))
                }
            })
            .await?;
            Ok(Shown::ApiKeys { api_keys, next_page_token })
        }
        KeysCommand::Revoke(revoke) => {
            let request = proto::RevokeApiKeyRequest { tenant_id: revoke.tenant, id: revoke.id };
            Ok(Shown::ApiKey(call(client.revoke_api_key(request)).await?))
        }
    }
}

async fn run_operators(args: OperatorsArgs) -> Result<Shown, Failure> {
    let mut client = operator_client(&args.client).await?;
    match args.command {
        OperatorsCommand::Create(create) => {
            let role = match create.role {
                OperatorRoleArg::Admin => operator::Role::Admin,
                OperatorRoleArg::Operator => operator::Role::Operator,
                OperatorRoleArg::Viewer => operator::Role::Viewer,
            };
            let operator = proto::Operator { display_name: create.name, role: role as i32, ..Default::default() };
            let request = proto::CreateOperatorRequest { operator: Some(operator) };
            Ok(Shown::CreatedOperator(call(client.create_operator(request)).await?))
        }
        OperatorsCommand::Get(get) => {
            Ok(Shown::Operator(call(client.get_operator(proto::GetOperatorRequest { id: get.id })).await?))
        }
        OperatorsCommand::List(list) => {
            let (operators, next_page_token) = all_pages(&list.page, |page_size, page_token| {
                let mut client = client.clone();
                async move {
                    let request = proto::ListOperatorsRequest { page_size, page_token };
                    let response = call(client.list_operators(request)).await?;
                    Ok((response.operators, response.next_page_token))
                }
            })
            .await?;
            Ok(Shown::Operators { operators, next_page_token })
        }
        OperatorsCommand::Revoke(revoke) => {
            Ok(Shown::Operator(call(client.revoke_operator(proto::RevokeOperatorRequest { id: revoke.id })).await?))
        }
    }
}

async fn run_resolve(args: ResolveArgs) -> Result<Shown, Failure> {
    use resolve_tenant_request::Identifier;
    let identifier = if let Some(id) = args.id {
        Identifier::Id(id)
    } else if let Some(slug) = args.slug {
        Identifier::Slug(slug)
    } else if let Some(domain) = args.domain {
        Identifier::Domain(domain)
    } else if let Some(channel) = args.channel {
        Identifier::ChannelBinding(channel_binding(channel))
    } else if let Some(api_key) = args.api_key {
        Identifier::ApiKey(api_key.expose_secret().to_owned())
    } else {
        return Err(Failure::Usage("give one of --id, --slug, --domain, --channel or --api-key".to_owned()));
    };
    let mut client = tenant_client(&args.client).await?;
    let tenant = call(client.resolve_tenant(proto::ResolveTenantRequest { identifier: Some(identifier) })).await?;
    Ok(Shown::Tenant(tenant))
}

/// Calls `fetch(page_size, page_token)` once, or with `--all` until the last page; returns the
/// items and the token of the page after them (empty after the last).
async fn all_pages<Item, Fetch, Page>(page: &PageArgs, mut fetch: Fetch) -> Result<(Vec<Item>, String), Failure>
where
    Fetch: FnMut(i32, String) -> Page,
    Page: Future<Output = Result<(Vec<Item>, String), Failure>>,
{
    let page_size = page.page_size.unwrap_or(0);
    let (mut items, mut next_page_token) = fetch(page_size, page.page_token.clone().unwrap_or_default()).await?;
    while page.all && !next_page_token.is_empty() {
        let (more, token) = fetch(page_size, next_page_token).await?;
        items.extend(more);
        next_page_token = token;
    }
    Ok((items, next_page_token))
}

fn channel_binding(channel: ChannelArg) -> proto::ChannelBinding {
    proto::ChannelBinding { channel_type: channel.channel_type, external_id: channel.external_id }
}

fn tenant_state(state: TenantStateArg) -> tenant::State {
    match state {
        TenantStateArg::Active => tenant::State::Active,
        TenantStateArg::Suspended => tenant::State::Suspended,
        TenantStateArg::Deleted => tenant::State::Deleted,
        TenantStateArg::Provisioning => tenant::State::Provisioning,
        TenantStateArg::Purging => tenant::State::Purging,
        TenantStateArg::Purged => tenant::State::Purged,
    }
}

fn key_scope(scope: KeyScopeArg) -> api_key::Scope {
    match scope {
        KeyScopeArg::Read => api_key::Scope::Read,
        KeyScopeArg::Write => api_key::Scope::Write,
    }
}
