//! What the server logs: the real binary, `tenantd serve --log-format json`, in a
//! subprocess whose stdout is read line by line as JSON. A subprocess, because the test
//! binary's tracing subscriber is global and shared by every test (helpers.rs
//! `init_logging`), so lines of concurrent tests could not be told apart there.
//!
//! A line logged inside an RPC's span carries the span's fields in `spans`
//! (`rpc.method`, `request.id`, `tenant.id`); [`request_id`] and [`span_field`] read them.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{PLATFORM_TOKEN, create_database, database_url, drop_database, migrate, redis_url};

/// How long a test waits for a line, or for the server to start.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `tenantd serve` process on a fresh migrated database, with its log lines.
pub struct LoggedServer {
    pub database: String,
    pub channel: Channel,
    lines: Arc<Mutex<Vec<Value>>>,
    process: Child,
}

impl LoggedServer {
    /// Starts the binary on port 0 with `RUST_LOG=info` and JSON logs on a fresh migrated
    /// database, and waits until it reports ready.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the binary as [`LoggedServer::start`] does, on `url`, without waiting for
    /// readiness (`database` is only remembered).
    pub async fn start_on(database: String, url: String) -> Self {
        Self::start_on_with(database, url, &[]).await
    }

    /// Starts the binary as [`LoggedServer::start`] does, with more environment `variables`.
    pub async fn start_with(variables: &[(&str, &str)]) -> Self {
        let database = create_database().await;
        migrate(&database).await;
        let server = Self::start_on_with(database.clone(), database_url("tenantd_app", &database), variables).await;
        server.wait_until_ready().await;
        server
    }

    async fn start_on_with(database: String, url: String, variables: &[(&str, &str)]) -> Self {
        let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
            .args(["serve", "--log-format", "json", "--listen-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("TENANTD_DATABASE_URL", url)
            .env("TENANTD_REDIS_URL", redis_url())
            .env("TENANTD_PLATFORM_TOKEN", PLATFORM_TOKEN)
            .env("TENANTD_HEALTH_INTERVAL_MS", "100")
            .env("TENANTD_SHUTDOWN_PREDRAIN_MS", "0")
            .envs(variables.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tenantd");
        let stdout = process.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line that is not JSON is kept as a string, so an assertion can show it.
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("lines").push(value);
            }
        });
        let mut server =
            Self { database, channel: Channel::from_static("http://127.0.0.1:1").connect_lazy(), lines, process };
        let listening = server.wait_for(|line| line["message"] == "tenantd listening").await;
        let port = listening["port"].as_u64().expect("the listening line names the port");
        server.channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
        server
    }

    /// Waits until readiness is SERVING.
    pub async fn wait_until_ready(&self) {
        let mut health = HealthClient::new(self.channel.clone());
        let started = Instant::now();
        loop {
            let status = health.check(HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "tenantd never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lock().expect("lines").clone()
    }

    /// The first line that satisfies `predicate`, waiting for it (lines reach the pipe
    /// when they are logged, which for the per-RPC line is just before the response).
    pub async fn wait_for(&self, predicate: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some(line) = self.lines().into_iter().find(&predicate) {
                return line;
            }
            assert!(started.elapsed() < PATIENCE, "no such line; logged so far:\n{:#?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines of the request with `request_id`, once its per-RPC line is logged (the
    /// last line of a request).
    pub async fn request_lines(&self, request_id: &str) -> Vec<Value> {
        self.wait_for(|line| line["message"] == "rpc finished" && self::request_id(line) == Some(request_id)).await;
        self.lines().into_iter().filter(|line| self::request_id(line) == Some(request_id)).collect()
    }

    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        drop_database(&self.database).await;
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        // A test that failed early leaves no process behind (killing twice is harmless).
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The value of a field of the spans a line was logged in, innermost first.
pub fn span_field<'l>(line: &'l Value, field: &str) -> Option<&'l str> {
    let spans = line["spans"].as_array()?;
    spans.iter().rev().find_map(|span| span[field].as_str())
}

/// The `request.id` a line carries.
pub fn request_id(line: &Value) -> Option<&str> {
    span_field(line, "request.id")
}

/// The lines whose message is `message`.
pub fn with_message<'l>(lines: &'l [Value], message: &str) -> Vec<&'l Value> {
    lines.iter().filter(|line| line["message"] == message).collect()
}
