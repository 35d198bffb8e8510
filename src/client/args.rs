//! The client subcommands' flags: `tenantd health`, `tenants`, `keys`, `operators` and `resolve`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use secrecy::SecretString;

/// The server address used when neither `--server` nor `TENANTD_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// The help heading of the flags every client command shares.
const CLIENT_OPTIONS: &str = "Client options";

/// Where the server is, and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address of the tenantd gRPC server: `https://host:port` for TLS, `http://host:port` or
    /// `host:port` for plaintext HTTP/2.
    #[arg(long, env = "TENANTD_SERVER", default_value = DEFAULT_SERVER, global = true, help_heading = CLIENT_OPTIONS)]
    pub server: String,
    /// PEM CA certificates that sign the server's certificate (with `https://`); default: the
    /// system's CA certificates.
    #[arg(long, env = "TENANTD_CLIENT_TLS_CA_FILE", global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS).
    #[arg(long, env = "TENANTD_CLIENT_TLS_CERT_FILE", requires = "tls_key_file", global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `--tls-cert-file`.
    #[arg(long, env = "TENANTD_CLIENT_TLS_KEY_FILE", requires = "tls_cert_file", global = true, help_heading = CLIENT_OPTIONS)]
    pub tls_key_file: Option<PathBuf>,
}

/// Where the server is, who is calling, and how results are printed: shared by the API commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Where the server is.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The platform credential: an operator key (`tdo_...`), or the bootstrap token the
    /// server was started with.
    #[arg(long, env = "TENANTD_PLATFORM_TOKEN", hide_env_values = true, global = true, help_heading = CLIENT_OPTIONS)]
    pub token: Option<SecretString>,
    /// How results are printed on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table, global = true, help_heading = CLIENT_OPTIONS)]
    pub output: OutputFormat,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document: the proto fields in lowerCamelCase, every field always present.
    Json,
}

/// `tenantd health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Where the server is.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The grpc.health.v1 service name: "" is readiness; also `liveness`, `postgres`, `redis`.
    #[arg(long, default_value = "")]
    pub service: String,
}

/// `tenantd tenants`.
#[derive(Debug, Clone, Args)]
pub struct TenantsArgs {
    /// Server, token and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: TenantsCommand,
}

/// The `tenantd tenants` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (state ACTIVE).
    Create(CreateTenantArgs),
    /// Show one tenant, by id or by slug (deleted tenants too).
    Get(GetTenantArgs),
    /// List tenants in creation order.
    List(ListTenantsArgs),
    /// Change a tenant's display name, labels, domains, channel bindings or plan.
    Update(UpdateTenantArgs),
    /// Suspend a tenant: its data plane answers FAILED_PRECONDITION.
    Suspend(TenantLifecycleArgs),
    /// Resume a suspended tenant.
    Resume(TenantLifecycleArgs),
    /// Soft-delete a tenant: its data is kept, its data plane answers NOT_FOUND.
    Delete(TenantLifecycleArgs),
    /// Move a live tenant to another isolation tier (a long-running operation: prints it;
    /// follow it with `tenantd operations get|wait`).
    Move(MoveTenantArgs),
    /// Export a tenant's archive to a file (waits for the export, then downloads it).
    Export(ExportTenantArgs),
    /// Recreate a tenant from an archive file (uploads it, then waits for the import).
    Import(ImportTenantArgs),
    /// Purge a deleted tenant for good (a long-running operation: prints it; with `--wait`,
    /// shows its progress and prints it once done).
    Purge(PurgeTenantArgs),
    /// Show the receipt of a tenant's purge.
    PurgeReceipt(PurgeReceiptArgs),
}

/// `tenantd tenants export`.
#[derive(Debug, Clone, Args)]
pub struct ExportTenantArgs {
    /// The tenant's id.
    pub id: String,
    /// Where to write the archive (JSON Lines; replaced if it exists).
    #[arg(long)]
    pub file: std::path::PathBuf,
}

/// `tenantd tenants import`.
#[derive(Debug, Clone, Args)]
pub struct ImportTenantArgs {
    /// The archive to import.
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// The tenant's id: an unused id, or a PURGED tenant's (restored); default a new id.
    #[arg(long)]
    pub tenant_id: Option<String>,
    /// The tenant's slug; default the archive's.
    #[arg(long)]
    pub slug: Option<String>,
    /// Where its data lives; default the archive's tier.
    #[arg(long, value_enum)]
    pub isolation_tier: Option<TierArg>,
    /// Idempotency key (a UUID): running the same import again with it returns the first
    /// import's operation and imports nothing more.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// `tenantd tenants purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeTenantArgs {
    /// The tenant's id.
    pub id: String,
    /// Wait until the purge is done, with a progress bar on a terminal.
    #[arg(long)]
    pub wait: bool,
}

/// `tenantd tenants purge-receipt`.
#[derive(Debug, Clone, Args)]
pub struct PurgeReceiptArgs {
    /// The purged tenant's id.
    pub id: String,
}

/// `tenantd tenants move`.
#[derive(Debug, Clone, Args)]
pub struct MoveTenantArgs {
    /// The tenant's id.
    pub id: String,
    /// The tier to move it to.
    #[arg(long, value_enum)]
    pub to: TierArg,
}

/// `tenantd operations`.
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// Server, credential and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: OperationsCommand,
}

/// The `tenantd operations` subcommands (google.longrunning.Operations).
#[derive(Debug, Clone, Subcommand)]
pub enum OperationsCommand {
    /// Show one operation: its phase, progress and, once done, its result or error.
    Get(OperationNameArgs),
    /// List operations, newest first.
    List(ListOperationsArgs),
    /// Ask an operation to stop (a tenant move: until its cutover).
    Cancel(OperationNameArgs),
    /// Wait (up to the server's limit, about the RPC timeout) until an operation is done.
    Wait(OperationNameArgs),
}

/// `tenantd operations get|cancel|wait`.
#[derive(Debug, Clone, Args)]
pub struct OperationNameArgs {
    /// The operation's name, `operations/<id>` (or just the id).
    pub name: String,
}

/// `tenantd operations list`.
#[derive(Debug, Clone, Args)]
pub struct ListOperationsArgs {
    /// Only operations on this tenant (its id).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Paging.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `tenantd tenants create`.
#[derive(Debug, Clone, Args)]
pub struct CreateTenantArgs {
    /// Unique, immutable identifier matching `^[a-z][a-z0-9-]{2,62}$`.
    #[arg(long)]
    pub slug: String,
    /// Name for people, 1 to 200 characters.
    #[arg(long)]
    pub display_name: String,
    /// A label `KEY=VALUE`; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A domain name that identifies the tenant; repeat for several.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// A channel binding `TYPE:EXTERNAL_ID`, e.g. `slack:T024BE7LD`; repeat for several.
    #[arg(long = "channel", value_name = "TYPE:EXTERNAL_ID", value_parser = parse_channel)]
    pub channels: Vec<ChannelArg>,
    /// Where the tenant's data is stored: `pooled` (shared tables) or `schema` (a PostgreSQL
    /// schema of its own; the server needs TENANTD_PROVISIONING_DATABASE_URL).
    #[arg(long, value_enum, default_value = "pooled")]
    pub isolation_tier: TierArg,
    /// The tenant's plan, by name (see PlanService); without it the tenant has no plan and no limits.
    #[arg(long)]
    pub plan: Option<String>,
    /// Idempotency key (a UUID): a retry with the same key creates nothing more.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// An isolation tier on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    /// The shared tables.
    Pooled,
    /// A schema of the tenant's own.
    Schema,
}

/// `tenantd tenants get`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("selector").required(true).args(["id", "slug"])))]
pub struct GetTenantArgs {
    /// The tenant's id.
    pub id: Option<String>,
    /// The tenant's slug, instead of its id.
    #[arg(long)]
    pub slug: Option<String>,
}

/// `tenantd tenants list`.
#[derive(Debug, Clone, Args)]
pub struct ListTenantsArgs {
    /// Only tenants in this state (default: every state).
    #[arg(long, value_enum)]
    pub state: Option<TenantStateArg>,
    /// Paging.
    #[command(flatten)]
    pub page: PageArgs,
}

/// Paging of list commands.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Maximum number of items per page (server default 50, at most 1000).
    #[arg(long)]
    pub page_size: Option<i32>,
    /// Continue from this `nextPageToken` of an earlier page.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow every page and print them as one list.
    #[arg(long)]
    pub all: bool,
}

/// A tenant state, as a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TenantStateArg {
    /// Served normally.
    Active,
    /// Data plane answers FAILED_PRECONDITION.
    Suspended,
    /// Soft-deleted.
    Deleted,
    /// A schema tenant whose schema is still being created.
    Provisioning,
    /// Deleted, its rows being removed.
    Purging,
    /// Only a tombstone is left.
    Purged,
}

/// `tenantd tenants update`: only the fields given change.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("fields")
        .required(true)
        .multiple(true)
        .args([
            "display_name", "labels", "clear_labels", "domains", "clear_domains", "channels", "clear_channels", "plan",
            "clear_plan", "overrides", "unlimited", "clear_overrides",
        ])
))]
pub struct UpdateTenantArgs {
    /// The tenant's id.
    pub id: String,
    /// New name for people.
    #[arg(long)]
    pub display_name: Option<String>,
    /// A label `KEY=VALUE`; repeat for several. Replaces all labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Remove every label.
    #[arg(long, conflicts_with = "labels")]
    pub clear_labels: bool,
    /// A domain name; repeat for several. Replaces all domains.
    #[arg(long = "domain", value_name = "DOMAIN")]
    pub domains: Vec<String>,
    /// Remove every domain.
    #[arg(long, conflicts_with = "domains")]
    pub clear_domains: bool,
    /// A channel binding `TYPE:EXTERNAL_ID`; repeat for several. Replaces all channel bindings.
    #[arg(long = "channel", value_name = "TYPE:EXTERNAL_ID", value_parser = parse_channel)]
    pub channels: Vec<ChannelArg>,
    /// Remove every channel binding.
    #[arg(long, conflicts_with = "channels")]
    pub clear_channels: bool,
    /// Move the tenant to this plan, by name.
    #[arg(long)]
    pub plan: Option<String>,
    /// Take the tenant off its plan: no limits.
    #[arg(long, conflicts_with = "plan")]
    pub clear_plan: bool,
    /// A limit of the tenant's own, in place of its plan's: `max_users=N` (likewise
    /// `max_documents`, `max_document_bytes`, `max_api_keys`) or `tenant_rate=PER_SECOND/BURST`
    /// (likewise `api_key_rate`); repeat for several. With --unlimited, replaces all overrides.
    #[arg(long = "override", value_name = "NAME=VALUE", value_parser = parse_override)]
    pub overrides: Vec<OverrideArg>,
    /// Lift one of the plan's limits to unlimited for this tenant, by name (`max_users`,
    /// `tenant_rate`, ...); repeat for several. With --override, replaces all overrides.
    #[arg(long = "unlimited", value_name = "NAME")]
    pub unlimited: Vec<String>,
    /// Remove every override: the plan's limits apply.
    #[arg(long, conflicts_with_all = ["overrides", "unlimited"])]
    pub clear_overrides: bool,
    /// Update only if the tenant's etag is still this one (else ABORTED).
    #[arg(long)]
    pub etag: Option<String>,
}

/// `tenantd tenants suspend|resume|delete`.
#[derive(Debug, Clone, Args)]
pub struct TenantLifecycleArgs {
    /// The tenant's id.
    pub id: String,
    /// Act only if the tenant's etag is still this one (else ABORTED).
    #[arg(long)]
    pub etag: Option<String>,
}

/// `tenantd keys`.
#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Server, token and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `tenantd keys` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a tenant; its secret is printed once and cannot be retrieved again.
    Create(CreateKeyArgs),
    /// List a tenant's API keys, revoked ones included (never their secrets).
    List(ListKeysArgs),
    /// Revoke an API key.
    Revoke(RevokeKeyArgs),
}

/// `tenantd keys create`.
#[derive(Debug, Clone, Args)]
pub struct CreateKeyArgs {
    /// The tenant's id.
    #[arg(long)]
    pub tenant: String,
    /// Name for people, 1 to 200 characters.
    #[arg(long)]
    pub name: String,
    /// What the key may do; repeat for both.
    #[arg(long = "scope", value_name = "SCOPE", value_enum, required = true)]
    pub scopes: Vec<KeyScopeArg>,
    /// When the key stops working, RFC 3339 (e.g. `2030-01-01T00:00:00Z`); default never.
    #[arg(long, value_parser = parse_timestamp)]
    pub expire_time: Option<prost_types::Timestamp>,
    /// Idempotency key (a UUID): a retry returns the same key, without its secret.
    #[arg(long)]
    pub request_id: Option<String>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyScopeArg {
    /// Read-only data-plane calls.
    Read,
    /// Data-plane mutations.
    Write,
}

/// `tenantd keys list`.
#[derive(Debug, Clone, Args)]
pub struct ListKeysArgs {
    /// The tenant's id.
    #[arg(long)]
    pub tenant: String,
    /// Paging.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `tenantd keys revoke`.
#[derive(Debug, Clone, Args)]
pub struct RevokeKeyArgs {
    /// The tenant's id.
    #[arg(long)]
    pub tenant: String,
    /// The key's id.
    pub id: String,
}

/// `tenantd operators`.
#[derive(Debug, Clone, Args)]
pub struct OperatorsArgs {
    /// Server, credential and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: OperatorsCommand,
}

/// The `tenantd operators` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum OperatorsCommand {
    /// Create an operator; its key is printed once and cannot be retrieved again.
    Create(CreateOperatorArgs),
    /// Show one operator (never its key).
    Get(OperatorIdArgs),
    /// List operators in creation order, revoked ones included.
    List(ListOperatorsArgs),
    /// Revoke an operator's key: every replica refuses it within a second.
    Revoke(OperatorIdArgs),
}

/// `tenantd operators create`.
#[derive(Debug, Clone, Args)]
pub struct CreateOperatorArgs {
    /// Name for people, 1 to 200 characters, e.g. `alice@example.com`.
    #[arg(long)]
    pub name: String,
    /// What the operator may do.
    #[arg(long, value_enum)]
    pub role: OperatorRoleArg,
}

/// An operator's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OperatorRoleArg {
    /// Everything, including API keys and operators.
    Admin,
    /// Tenant lifecycle and tenant data; no credential management.
    Operator,
    /// Reads only.
    Viewer,
}

/// `tenantd operators get|revoke`.
#[derive(Debug, Clone, Args)]
pub struct OperatorIdArgs {
    /// The operator's id.
    pub id: String,
}

/// `tenantd operators list`.
#[derive(Debug, Clone, Args)]
pub struct ListOperatorsArgs {
    /// Paging.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `tenantd resolve`: exactly one identifier.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("identifier").required(true).args(["id", "slug", "domain", "channel", "api_key"])))]
pub struct ResolveArgs {
    /// Server, token and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The tenant's id.
    #[arg(long)]
    pub id: Option<String>,
    /// The tenant's slug.
    #[arg(long)]
    pub slug: Option<String>,
    /// One of the tenant's domains.
    #[arg(long)]
    pub domain: Option<String>,
    /// One of the tenant's channel bindings, `TYPE:EXTERNAL_ID`.
    #[arg(long, value_name = "TYPE:EXTERNAL_ID", value_parser = parse_channel)]
    pub channel: Option<ChannelArg>,
    /// A tenant API key (it must be valid: not revoked, not expired).
    #[arg(long)]
    pub api_key: Option<SecretString>,
}

/// A channel binding given as `TYPE:EXTERNAL_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelArg {
    /// The kind of channel, e.g. `slack`.
    pub channel_type: String,
    /// The tenant's id in that channel.
    pub external_id: String,
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, label_value)) if !key.is_empty() => Ok((key.to_owned(), label_value.to_owned())),
        _ => Err(format!("`{value}` is not KEY=VALUE")),
    }
}

/// One `--override`: a cap or a rate, by its `PlanLimits` field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideArg {
    /// `max_users=N` and the other caps.
    Cap(String, i64),
    /// `tenant_rate=PER_SECOND/BURST` or `api_key_rate=...`.
    Rate(String, u32, u32),
}

const OVERRIDE_CAPS: [&str; 4] = ["max_users", "max_documents", "max_document_bytes", "max_api_keys"];
const OVERRIDE_RATES: [&str; 2] = ["tenant_rate", "api_key_rate"];

fn parse_override(value: &str) -> Result<OverrideArg, String> {
    let Some((name, limit)) = value.split_once('=') else {
        return Err(format!("`{value}` is not NAME=VALUE"));
    };
    if OVERRIDE_CAPS.contains(&name) {
        let cap = limit.parse().map_err(|_| format!("`{limit}` is not a whole number"))?;
        return Ok(OverrideArg::Cap(name.to_owned(), cap));
    }
    if OVERRIDE_RATES.contains(&name) {
        let rate =
            limit.split_once('/').and_then(|(per_second, burst)| Some((per_second.parse().ok()?, burst.parse().ok()?)));
        let (per_second, burst) = rate.ok_or_else(|| format!("`{limit}` is not PER_SECOND/BURST"))?;
        return Ok(OverrideArg::Rate(name.to_owned(), per_second, burst));
    }
    Err(format!("`{name}` is not one of {}, {}", OVERRIDE_CAPS.join(", "), OVERRIDE_RATES.join(", ")))
}

fn parse_channel(value: &str) -> Result<ChannelArg, String> {
    match value.split_once(':') {
        Some((channel_type, external_id)) if !channel_type.is_empty() && !external_id.is_empty() => {
            Ok(ChannelArg { channel_type: channel_type.to_owned(), external_id: external_id.to_owned() })
        }
        _ => Err(format!("`{value}` is not TYPE:EXTERNAL_ID")),
    }
}

fn parse_timestamp(value: &str) -> Result<prost_types::Timestamp, String> {
    value.parse().map_err(|_| format!("`{value}` is not an RFC 3339 time such as 2030-01-01T00:00:00Z"))
}

/// `tenantd events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: EventsCommand,
}

/// The `tenantd events` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Print tenant events as JSON lines (one event per line, each with its `cursor`).
    Watch(WatchEventsArgs),
}

/// `tenantd events watch`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("start").args(["from_cursor", "since"])))]
pub struct WatchEventsArgs {
    /// Server and platform token (`--output` is ignored: the output is JSON lines).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Watch with this tenant API key (its own tenant) instead of the platform token.
    #[arg(long, env = "TENANTD_API_KEY", hide_env_values = true)]
    pub api_key: Option<SecretString>,
    /// Only this tenant (repeatable; platform token only); none means every tenant.
    #[arg(long = "tenant", value_name = "TENANT_ID")]
    pub tenants: Vec<String>,
    /// Only events of this type, e.g. `tenant.suspend` (repeatable).
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// Only events about resources of this type, e.g. `user` (repeatable).
    #[arg(long = "resource-type", value_name = "TYPE")]
    pub resource_types: Vec<String>,
    /// Continue after this cursor (a printed event's `cursor`, or the last `cursor:` line on stderr).
    #[arg(long)]
    pub from_cursor: Option<String>,
    /// Start with the events created at or after this RFC 3339 time.
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
    /// Keep streaming (resuming by itself after an interruption) instead of exiting once the
    /// stream has caught up with what was committed before the call.
    #[arg(long, short = 'f')]
    pub follow: bool,
}
