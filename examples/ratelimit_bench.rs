//! Rate limits measured (decision 0017), against a running `tenantd serve` and its Redis:
//! - `cost`: DiagnosticsService/Ping at `--concurrency` for a tenant without limits and for
//!   one whose limit is never reached (so every request runs the Redis script), rounds
//!   interleaved; throughput and p50/p99 side by side, and their ratio;
//! - `cost_get_user`: the same with UserService/GetUser (one database read per request);
//! - `overshoot`: `--concurrency` × 4 callers hammering a tenant limited to `--rate` per second
//!   (burst `--burst`); admitted requests against rate × elapsed + burst (goal: no overshoot);
//! - `noisy`: a quiet tenant at half its limit (open loop), alone, then beside a noisy tenant
//!   offering 10× its own limit; the quiet tenant's p99 in both runs and their ratio.
//!
//! Limits come from real plans (PlanService), one per limited tenant. One JSON line per phase goes to stdout. A benchmark, not a test: it
//! asserts no speed. See bench/ratelimit.sh for the exact command.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tenantd::proto::diagnostics_service_client::DiagnosticsServiceClient;
use tenantd::proto::plan_service_client::PlanServiceClient;
use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{
    CreatePlanRequest, CreateTenantRequest, CreateUserRequest, GetUserRequest, PingRequest, Plan, PlanLimits,
    RequestRate, Tenant, User,
};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// tenantd's address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The platform token.
    #[arg(long)]
    token: String,
    /// Concurrent callers in the cost phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds of the cost phase (interleaved).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The limit of the overshoot and noisy phases, per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// The burst of that limit.
    #[arg(long, default_value_t = 20)]
    burst: u32,
    /// A control run of the cost phases: the "with" tenant gets no limit either, so both
    /// sides are the same and their ratio shows the bench's own bias.
    #[arg(long)]
    control: bool,
}

type Ping = DiagnosticsServiceClient<Channel>;

fn ping_request(token: &str, tenant: &str) -> tonic::Request<PingRequest> {
    tenant_request(PingRequest {}, token, tenant)
}

fn tenant_request<T>(message: T, token: &str, tenant: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request.metadata_mut().insert("x-tenant-id", tenant.parse().expect("ascii"));
    request
}

/// What a closed-loop caller sends: a Ping, or a GetUser of this user id.
#[derive(Clone)]
enum Call {
    Ping,
    GetUser(String),
}

impl Call {
    async fn send(&self, channel: &Channel, token: &str, tenant: &str) -> Result<(), tonic::Status> {
        match self {
            Self::Ping => Ping::new(channel.clone()).ping(ping_request(token, tenant)).await.map(drop),
            Self::GetUser(id) => UserServiceClient::new(channel.clone())
                .get_user(tenant_request(GetUserRequest { id: id.clone() }, token, tenant))
                .await
                .map(drop),
        }
    }
}

/// Creates a user in `tenant`; its id.
async fn create_user(channel: &Channel, token: &str, tenant: &str) -> anyhow::Result<String> {
    let user = User { email: format!("bench-{}@example.com", uuid::Uuid::new_v4().simple()), ..Default::default() };
    let request = tenant_request(CreateUserRequest { user: Some(user), ..Default::default() }, token, tenant);
    Ok(UserServiceClient::new(channel.clone()).create_user(request).await?.into_inner().id)
}

/// Creates a tenant on a new plan with `limit` as its tenant rate (`None`: no plan, unlimited).
async fn create_tenant(
    channel: &Channel,
    token: &str,
    slug: &str,
    limit: Option<RequestRate>,
) -> anyhow::Result<String> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut plan_name = String::new();
    if let Some(rate) = limit {
        plan_name = format!("{slug}-plan");
        let plan = Plan {
            name: plan_name.clone(),
            display_name: plan_name.clone(),
            limits: Some(PlanLimits { tenant_rate: Some(rate), ..Default::default() }),
            ..Default::default()
        };
        let mut request = tonic::Request::new(CreatePlanRequest { plan: Some(plan), ..Default::default() });
        request.metadata_mut().insert("authorization", bearer.clone());
        PlanServiceClient::new(channel.clone()).create_plan(request).await?;
    }
    let tenant = Tenant { slug: slug.to_owned(), display_name: slug.to_owned(), plan: plan_name, ..Default::default() };
    let mut request = tonic::Request::new(CreateTenantRequest { tenant: Some(tenant), ..Default::default() });
    request.metadata_mut().insert("authorization", bearer);
    Ok(TenantServiceClient::new(channel.clone()).create_tenant(request).await?.into_inner().id)
}

/// What a closed-loop run measured.
struct Run {
    admitted: u64,
    /// RESOURCE_EXHAUSTED answers.
    refused: u64,
    /// Any other error.
    failed: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// The code and message of the first other error, if any.
    first_failure: Option<String>,
}

/// `callers` closed-loop callers pinging `tenant` for `duration`.
async fn closed_loop(channel: &Channel, token: &str, tenant: &str, callers: usize, duration: Duration) -> Run {
    closed_loop_of(&Call::Ping, channel, token, tenant, callers, duration).await
}

/// `callers` closed-loop callers sending `call` for `tenant` for `duration`.
async fn closed_loop_of(
    call: &Call,
    channel: &Channel,
    token: &str,
    tenant: &str,
    callers: usize,
    duration: Duration,
) -> Run {
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..callers {
        let (channel, call, token, tenant) = (channel.clone(), call.clone(), token.to_owned(), tenant.to_owned());
        let (admitted, refused, failed, latency) = (admitted.clone(), refused.clone(), failed.clone(), latency.clone());
        let first_failure = first_failure.clone();
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("histogram");
            while started.elapsed() < duration {
                let sent = Instant::now();
                match call.send(&channel, &token, &tenant).await {
                    Ok(_) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        let _ = local.record(sent.elapsed().as_micros() as u64);
                    }
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .await
                            .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
            let _ = latency.lock().await.add(&local);
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let latency = latency.lock().await.clone();
    Run {
        admitted: admitted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency,
        first_failure: first_failure.lock().await.clone(),
    }
}

/// An open-loop caller: `rate` pings per second at `tenant` for `duration`; admitted
/// requests' latencies.
async fn open_loop(channel: &Channel, token: &str, tenant: &str, rate: u32, duration: Duration) -> Run {
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut calls = Vec::new();
    while started.elapsed() < duration {
        ticker.tick().await;
        let (mut client, token, tenant) = (Ping::new(channel.clone()), token.to_owned(), tenant.to_owned());
        let (admitted, refused, failed, latency) = (admitted.clone(), refused.clone(), failed.clone(), latency.clone());
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            match client.ping(ping_request(&token, &tenant)).await {
                Ok(_) => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                    let _ = latency.lock().await.record(sent.elapsed().as_micros() as u64);
                }
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for call in calls {
        let _ = call.await;
    }
    let latency = latency.lock().await.clone();
    Run {
        admitted: admitted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latency,
        first_failure: None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.server.clone())?.connect().await?;
    let token = args.token.as_str();
    let duration = Duration::from_secs(args.duration);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let slug = |name: &str| format!("rl-{name}-{}", &suffix[..8]);

    // cost: no limits vs a limit never reached.
    let unlimited = create_tenant(&channel, token, &slug("free"), None).await?;
    let never_reached = RequestRate { per_second: 1_000_000, burst: 1_000_000 };
    let limited = create_tenant(&channel, token, &slug("high"), (!args.control).then_some(never_reached)).await?;
    let unlimited_user = create_user(&channel, token, &unlimited).await?;
    let limited_user = create_user(&channel, token, &limited).await?;
    for (phase, call_without, call_with) in [
        ("cost", Call::Ping, Call::Ping),
        ("cost_get_user", Call::GetUser(unlimited_user), Call::GetUser(limited_user)),
    ] {
        let warm = Duration::from_secs(1);
        let _ = closed_loop_of(&call_without, &channel, token, &unlimited, args.concurrency, warm).await;
        let _ = closed_loop_of(&call_with, &channel, token, &limited, args.concurrency, warm).await;
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            // Each side goes first in every other round, so that neither gains from its place.
            if round % 2 == 1 {
                with.push(closed_loop_of(&call_with, &channel, token, &limited, args.concurrency, duration).await);
            }
            without.push(closed_loop_of(&call_without, &channel, token, &unlimited, args.concurrency, duration).await);
            if round % 2 == 0 {
                with.push(closed_loop_of(&call_with, &channel, token, &limited, args.concurrency, duration).await);
            }
        }
        let rate_of = |run: &Run| run.admitted as f64 / run.elapsed.as_secs_f64();
        let median = |runs: &[Run], value: &dyn Fn(&Run) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(value).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let p = |quantile: f64| move |run: &Run| run.latency.value_at_quantile(quantile) as f64;
        let (rps_without, rps_with) = (median(&without, &rate_of), median(&with, &rate_of));
        let (p50_without, p50_with) = (median(&without, &p(0.5)), median(&with, &p(0.5)));
        let (p99_without, p99_with) = (median(&without, &p(0.99)), median(&with, &p(0.99)));
        let rounds: Vec<_> =
            without.iter().zip(&with).map(|(a, b)| (rate_of(b) / rate_of(a) * 100.0).round() / 100.0).collect();
        println!(
            "{}",
            serde_json::json!({
                "phase": phase, "concurrency": args.concurrency, "rounds": args.rounds, "seconds": args.duration,
                "rps_without": rps_without.round(), "rps_with": rps_with.round(), "rps_ratio": rps_with / rps_without,
                "rps_ratio_per_round": rounds,
                "p50_us_without": p50_without, "p50_us_with": p50_with, "p50_ratio": p50_with / p50_without,
                "p99_us_without": p99_without, "p99_us_with": p99_with, "p99_ratio": p99_with / p99_without,
                "refused_with": with.iter().map(|run| run.refused).sum::<u64>(),
                "failed": with.iter().chain(&without).map(|run| run.failed).sum::<u64>(),
                "first_failure": with.iter().chain(&without).find_map(|run| run.first_failure.clone()),
            })
        );
    }

    // overshoot: many callers against one limit.
    let limit = RequestRate { per_second: args.rate, burst: args.burst };
    let hammered = create_tenant(&channel, token, &slug("hammered"), Some(limit)).await?;
    let run = closed_loop(&channel, token, &hammered, args.concurrency * 4, duration).await;
    let allowed = f64::from(args.rate) * run.elapsed.as_secs_f64() + f64::from(args.burst);
    println!(
        "{}",
        serde_json::json!({
            "phase": "overshoot", "callers": args.concurrency * 4, "rate": args.rate, "burst": args.burst,
            "seconds": run.elapsed.as_secs_f64(), "admitted": run.admitted, "refused": run.refused, "failed": run.failed,
            "allowed": allowed.round(), "overshoot": (run.admitted as f64 - allowed).max(0.0).round(),
            "first_failure": run.first_failure,
        })
    );

    // noisy neighbour: the quiet tenant at half its limit, alone and beside a noisy one at 10×.
    let quiet = create_tenant(&channel, token, &slug("quiet"), Some(limit)).await?;
    let noisy = create_tenant(&channel, token, &slug("noisy"), Some(limit)).await?;
    let quiet_rate = (args.rate / 2).max(1);
    let alone = open_loop(&channel, token, &quiet, quiet_rate, duration).await;
    let noise = open_loop(&channel, token, &noisy, args.rate * 10, duration);
    let beside = open_loop(&channel, token, &quiet, quiet_rate, duration);
    let (noise, beside) = tokio::join!(noise, beside);
    let p99 = |run: &Run| run.latency.value_at_quantile(0.99);
    println!(
        "{}",
        serde_json::json!({
            "phase": "noisy", "quiet_rate": quiet_rate, "noisy_offered": args.rate * 10, "limit": args.rate,
            "quiet_p99_us_alone": p99(&alone), "quiet_p99_us_beside": p99(&beside),
            "p99_ratio": p99(&beside) as f64 / p99(&alone) as f64,
            "quiet_refused_alone": alone.refused, "quiet_refused_beside": beside.refused,
            "noisy_admitted": noise.admitted, "noisy_refused": noise.refused,
            "failed": alone.failed + beside.failed + noise.failed,
        })
    );
    Ok(())
}
