//! A closed-loop gRPC load generator for tenantd (and for `examples/echo_server.rs`).
//!
//! Each of `--concurrency` workers sends one request, waits for the answer, and sends the
//! next, like a pgbench client. Workers share `--connections` HTTP/2 connections (worker
//! `i` uses connection `i % connections`). Latency goes into an HDR histogram; non-OK
//! statuses are counted by code. One JSON line of results goes to stdout.
//!
//! ```sh
//! cargo run --release --example loadgen -- --addr http://127.0.0.1:50051 \
//!   --rpc get-user --targets users.txt --platform-token dev-platform-token \
//!   --concurrency 16 --duration 10 --warmup 3
//! ```
//!
//! `--targets` is a text file of `tenant_id user_id` lines (whitespace or comma separated;
//! the user id may be missing for `ping` and `create-user`). `--tenants N` keeps the first
//! N distinct tenants of the file. With `--api-key`, the key names its tenant: no tenant
//! metadata is sent and only that tenant's lines are used.
//!
//! `--rpc health-wait` polls `grpc.health.v1.Health/Check("")` until SERVING and prints how
//! long that took since `--since-unix-ns` (the caller's process start time), for measuring
//! start-up.
//!
//! This is a benchmark tool: it asserts nothing about speed.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tenantd::auth::api_key::ApiKeyToken;
use tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{CreateUserRequest, GetUserRequest, PingRequest, User};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Which call the workers make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// `tenantd.v1.UserService/GetUser` of a random target user.
    GetUser,
    /// `tenantd.v1.UserService/CreateUser` with a fresh random email, in a random tenant.
    CreateUser,
    /// `tenantd.v1.DiagnosticsService/Ping` in a random tenant.
    Ping,
    /// The same request as `ping` (same metadata), labelled for the bare echo server.
    EchoPing,
    /// Poll readiness (`""`) until SERVING, then print the elapsed time.
    HealthWait,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "closed-loop gRPC load generator for tenantd")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// The call to make.
    #[arg(long, value_enum, default_value_t = Rpc::GetUser)]
    rpc: Rpc,
    /// Concurrent workers (requests in flight).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers; 0 means one per worker.
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop after this many measured requests instead of after `--duration`.
    #[arg(long)]
    requests: Option<u64>,
    /// File of `tenant_id [user_id]` lines.
    #[arg(long)]
    targets: Option<PathBuf>,
    /// A tenant id to use (repeatable), in addition to `--targets`.
    #[arg(long = "tenant-id")]
    tenant_ids: Vec<String>,
    /// Keep only the first N distinct tenants of the targets.
    #[arg(long)]
    tenants: Option<usize>,
    /// Platform token: sent as `authorization: Bearer`, with `x-tenant-id` per request.
    #[arg(long, env = "TENANTD_PLATFORM_TOKEN", hide_env_values = true)]
    platform_token: Option<String>,
    /// A tenant API key (`tdk_...`), sent instead of the platform token.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Before the warm-up, ping every distinct tenant once (fills tenant-resolution caches).
    #[arg(long)]
    prewarm: bool,
    /// Free-form label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// For `health-wait`: when the server process was started (Unix time, ns).
    #[arg(long)]
    since_unix_ns: Option<u128>,
    /// For `health-wait`: give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// One request target.
#[derive(Debug, Clone)]
struct Target {
    /// `x-tenant-id` value, or `None` when an API key names the tenant.
    tenant: Option<AsciiMetadataValue>,
    /// User id for GetUser.
    user_id: String,
}

/// What one worker measured.
struct WorkerResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
    all_requests: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rpc == Rpc::HealthWait {
        return health_wait(&args).await;
    }
    let (authorization, targets) = load_targets(&args)?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let connections = if args.connections == 0 { args.concurrency } else { args.connections.min(args.concurrency) };
    let endpoint = Endpoint::from_shared(args.addr.clone())?.tcp_nodelay(true).connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(endpoint.connect().await.with_context(|| format!("connecting to {}", args.addr))?);
    }

    let prewarm_requests =
        if args.prewarm { prewarm(&channels, &authorization, &targets, args.concurrency).await? } else { 0 };

    let targets = Arc::new(targets);
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(if args.requests.is_some() { 0.0 } else { args.warmup });
    let measure_until = measure_from + Duration::from_secs_f64(args.duration);
    let budget = args.requests.map(|requests| Arc::new(AtomicU64::new(requests)));
    let cpu_before = process_cpu_seconds();
    let cpu_at_measure_start = Arc::new(std::sync::Mutex::new(None::<f64>));

    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let channel = channels[worker % connections].clone();
        let targets = targets.clone();
        let authorization = authorization.clone();
        let budget = budget.clone();
        let rpc = args.rpc;
        workers.push(tokio::spawn(async move {
            run_worker(rpc, channel, authorization, targets, measure_from, measure_until, budget).await
        }));
    }
    // Record CPU time at the start of the measured window (for the client's own cost).
    {
        let cpu_at_measure_start = cpu_at_measure_start.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            if let Ok(mut slot) = cpu_at_measure_start.lock() {
                *slot = process_cpu_seconds();
            }
        });
    }

    let mut histogram = new_histogram()?;
    let mut errors = BTreeMap::<String, u64>::new();
    let (mut ok, mut all_requests) = (0u64, 0u64);
    for worker in workers {
        let result = worker.await.context("worker panicked")??;
        histogram.add(&result.histogram)?;
        for (code, count) in result.errors {
            *errors.entry(code).or_default() += count;
        }
        ok += result.ok;
        all_requests += result.all_requests;
    }
    let finished = Instant::now();
    // Duration mode records only requests that completed inside the window.
    let measured_seconds = if args.requests.is_some() {
        finished.saturating_duration_since(measure_from).as_secs_f64().max(1e-9)
    } else {
        args.duration.max(1e-9)
    };
    let measured_requests = histogram.len();
    let cpu_after = process_cpu_seconds();
    let cpu_window = match (cpu_at_measure_start.lock().ok().and_then(|slot| *slot), cpu_after) {
        (Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    let error_count: u64 = errors.values().sum();
    let percentile = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let output = serde_json::json!({
        "tool": "loadgen",
        "label": args.label,
        "rpc": format!("{:?}", args.rpc),
        "addr": args.addr,
        "concurrency": args.concurrency,
        "connections": connections,
        "tenants": distinct_tenants(&targets),
        "warmup_s": if args.requests.is_some() { 0.0 } else { args.warmup },
        "measured_s": measured_seconds,
        "ok": ok,
        "errors": error_count,
        "errors_by_code": errors,
        "rps": ok as f64 / measured_seconds,
        "measured_requests": measured_requests,
        "all_requests": all_requests,
        "prewarm_requests": prewarm_requests,
        "latency_ms": {
            "p50": percentile(0.50),
            "p90": percentile(0.90),
            "p99": percentile(0.99),
            "p999": percentile(0.999),
            "max": histogram.max() as f64 / 1000.0,
            "mean": histogram.mean() / 1000.0,
        },
        "client_cpu_s_total": match (cpu_before, cpu_after) { (Some(a), Some(b)) => Some(b - a), _ => None },
        "client_cpu_us_per_request": cpu_window.map(|cpu| cpu * 1e6 / (measured_requests.max(1) as f64)),
    });
    println!("{output}");
    Ok(())
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, from 1 µs to 60 s, three significant digits.
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// The `authorization` value and the targets.
fn load_targets(args: &Args) -> anyhow::Result<(AsciiMetadataValue, Vec<Target>)> {
    let mut lines: Vec<(String, String)> = Vec::new();
    if let Some(path) = &args.targets {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let mut fields = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|field| !field.is_empty());
            if let Some(tenant) = fields.next() {
                lines.push((tenant.to_owned(), fields.next().unwrap_or_default().to_owned()));
            }
        }
    }
    lines.extend(args.tenant_ids.iter().map(|tenant| (tenant.clone(), String::new())));
    if let Some(limit) = args.tenants {
        let mut kept = HashSet::new();
        lines.retain(|(tenant, _)| kept.contains(tenant) || (kept.len() < limit && kept.insert(tenant.clone())));
    }

    let (authorization, key_tenant) = match (&args.api_key, &args.platform_token) {
        (Some(key), None) => {
            let token = ApiKeyToken::parse(key).map_err(|error| anyhow::anyhow!("--api-key: {error:?}"))?;
            (format!("Bearer {key}"), Some(token.tenant_id().to_string()))
        }
        (None, Some(token)) => (format!("Bearer {token}"), None),
        _ => bail!("give exactly one of --platform-token and --api-key"),
    };
    let authorization = AsciiMetadataValue::try_from(authorization).context("credential is not ASCII")?;

    let targets: Vec<Target> = match key_tenant {
        Some(tenant) => {
            let mut users: Vec<String> =
                lines.into_iter().filter(|(line_tenant, _)| *line_tenant == tenant).map(|(_, user)| user).collect();
            if users.is_empty() {
                users.push(String::new());
            }
            users.into_iter().map(|user_id| Target { tenant: None, user_id }).collect()
        }
        None => lines
            .into_iter()
            .map(|(tenant, user_id)| {
                let tenant = AsciiMetadataValue::try_from(tenant.as_str()).context("tenant id is not ASCII")?;
                Ok(Target { tenant: Some(tenant), user_id })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if targets.is_empty() {
        bail!("no targets: give --targets or --tenant-id");
    }
    if args.rpc == Rpc::GetUser && targets.iter().any(|target| target.user_id.is_empty()) {
        bail!("get-user needs a user id on every target line");
    }
    Ok((authorization, targets))
}

fn distinct_tenants(targets: &[Target]) -> usize {
    targets
        .iter()
        .filter_map(|target| target.tenant.as_ref().map(|tenant| tenant.as_bytes()))
        .collect::<HashSet<_>>()
        .len()
}

fn metadata(authorization: &AsciiMetadataValue, target: &Target) -> MetadataMap {
    let mut metadata = MetadataMap::with_capacity(2);
    metadata.insert("authorization", authorization.clone());
    if let Some(tenant) = &target.tenant {
        metadata.insert("x-tenant-id", tenant.clone());
    }
    metadata
}

fn request<T>(message: T, metadata: MetadataMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata;
    request
}

async fn run_worker(
    rpc: Rpc,
    channel: Channel,
    authorization: AsciiMetadataValue,
    targets: Arc<Vec<Target>>,
    measure_from: Instant,
    measure_until: Instant,
    budget: Option<Arc<AtomicU64>>,
) -> anyhow::Result<WorkerResult> {
    let mut users = UserServiceClient::new(channel.clone());
    let mut diagnostics = DiagnosticsServiceClient::new(channel);
    let mut histogram = new_histogram()?;
    let mut errors = BTreeMap::<String, u64>::new();
    let (mut ok, mut all_requests) = (0u64, 0u64);
    let mut random = SmallRng::from_rng(&mut rand::rng());
    loop {
        let now = Instant::now();
        let measuring = now >= measure_from;
        match &budget {
            // Claim one request of the budget; stop when it is spent.
            Some(budget)
                if budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1)).is_err() =>
            {
                break;
            }
            Some(_) => {}
            None if now >= measure_until => break,
            None => {}
        }
        let target = &targets[random.random_range(0..targets.len())];
        let metadata = metadata(&authorization, target);
        let started = Instant::now();
        let status = match rpc {
            Rpc::GetUser => {
                users.get_user(request(GetUserRequest { id: target.user_id.clone() }, metadata)).await.map(drop)
            }
            Rpc::CreateUser => {
                let email = format!("lg-{:032x}@bench.example", random.random::<u128>());
                let user = User { email, ..User::default() };
                let message = CreateUserRequest { user: Some(user), request_id: String::new() };
                users.create_user(request(message, metadata)).await.map(drop)
            }
            Rpc::Ping | Rpc::EchoPing => diagnostics.ping(request(PingRequest {}, metadata)).await.map(drop),
            Rpc::HealthWait => bail!("health-wait has no workers"),
        };
        let elapsed = started.elapsed();
        all_requests += 1;
        if !measuring || (budget.is_none() && Instant::now() > measure_until) {
            continue;
        }
        match status {
            Ok(()) => {
                ok += 1;
                histogram.saturating_record(elapsed.as_micros().max(1) as u64);
            }
            Err(status) => {
                *errors.entry(format!("{:?}", status.code())).or_default() += 1;
            }
        }
    }
    Ok(WorkerResult { histogram, errors, ok, all_requests })
}

/// Pings each distinct tenant once, `concurrency` at a time.
async fn prewarm(
    channels: &[Channel],
    authorization: &AsciiMetadataValue,
    targets: &[Target],
    concurrency: usize,
) -> anyhow::Result<u64> {
    let mut seen = HashSet::new();
    let tenants: Arc<Vec<Target>> = Arc::new(
        targets
            .iter()
            .filter(|target| seen.insert(target.tenant.as_ref().map(|tenant| tenant.as_bytes())))
            .cloned()
            .collect(),
    );
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let mut client = DiagnosticsServiceClient::new(channels[worker % channels.len()].clone());
        let (tenants, authorization) = (tenants.clone(), authorization.clone());
        tasks.push(tokio::spawn(async move {
            for target in tenants.iter().skip(worker).step_by(concurrency) {
                // A failure here shows up again, counted, in the measured run.
                let _ = client.ping(request(PingRequest {}, metadata(&authorization, target))).await;
            }
        }));
    }
    for task in tasks {
        task.await.context("prewarm task panicked")?;
    }
    Ok(tenants.len() as u64)
}

/// Polls readiness until SERVING; prints the time since `--since-unix-ns` (or since this
/// tool started).
async fn health_wait(args: &Args) -> anyhow::Result<()> {
    let since = args.since_unix_ns.unwrap_or_else(unix_ns);
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let endpoint =
        Endpoint::from_shared(args.addr.clone())?.tcp_nodelay(true).connect_timeout(Duration::from_millis(200));
    let mut polls = 0u64;
    let mut first_answer_ns = None;
    loop {
        polls += 1;
        if let Ok(channel) = endpoint.connect().await {
            let mut client = HealthClient::new(channel);
            loop {
                let answer = client.check(HealthCheckRequest { service: String::new() }).await;
                let Ok(answer) = answer else { break };
                first_answer_ns.get_or_insert_with(|| unix_ns().saturating_sub(since));
                if answer.into_inner().status == ServingStatus::Serving as i32 {
                    let serving_ns = unix_ns().saturating_sub(since);
                    let output = serde_json::json!({
                        "tool": "loadgen",
                        "label": args.label,
                        "rpc": "HealthWait",
                        "serving_after_ms": serving_ns as f64 / 1e6,
                        "first_answer_after_ms": first_answer_ns.map(|ns| ns as f64 / 1e6),
                        "polls": polls,
                    });
                    println!("{output}");
                    return Ok(());
                }
                polls += 1;
                if Instant::now() > deadline {
                    bail!("not SERVING after {} s", args.timeout);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if Instant::now() > deadline {
            bail!("no health answer after {} s", args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or_default()
}

/// This process's user + system CPU time, from `/proc/self/stat` (Linux only).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime), counted from after the name (field 3).
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}
