//! The operator CLI: the real `tenantd` binary (`health`, `tenants`, `keys`, `operators`,
//! `resolve`) run against the real server on port 0, its exit status, stdout (JSON parsed) and
//! stderr checked.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tenantd::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{PLATFORM_TOKEN, create_database, drop_database, migrate, test_config, unique_slug};

/// A server started as `helpers::start` starts it, keeping its address for the binary.
struct CliServer {
    database: String,
    address: String,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl CliServer {
    /// A fresh database, migrated, and a server that reports ready.
    async fn ready() -> Self {
        let database = create_database().await;
        migrate(&database).await;
        let server = Self::start(database).await;
        server.wait_until_serving("").await;
        server
    }

    /// A server on `database` (migrated or not), without waiting for readiness.
    async fn start(database: String) -> Self {
        let application = Application::build(test_config(&database)).await.expect("build application");
        let address = format!("http://127.0.0.1:{}", application.port());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(application.run_until(shutdown.clone().cancelled_owned()));
        Self { database, address, shutdown, server }
    }

    async fn wait_until_serving(&self, service: &str) {
        let channel = Channel::from_shared(self.address.clone()).expect("uri").connect_lazy();
        let started = Instant::now();
        loop {
            let answer = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: service.into() }).await;
            if answer.is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{service:?} never became SERVING");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs `tenantd <args> --server <this server>` with the platform token from the environment.
    async fn run(&self, args: &[&str]) -> Run {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--server", &self.address]);
        tenantd(&full, Some(PLATFORM_TOKEN)).await
    }

    /// Like [`CliServer::run`] with `--output json`; asserts success and parses stdout.
    async fn json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--output", "json"]);
        let run = self.run(&full).await;
        assert_eq!(run.code, 0, "tenantd {args:?} failed: {run:?}");
        run.json()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task").expect("server stopped cleanly");
        drop_database(&self.database).await;
    }
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:?}"))
    }
}

/// Runs the binary with `args` and, if given, `TENANTD_PLATFORM_TOKEN`. The process blocks, so it
/// runs off the test's runtime thread, where the server is running.
async fn tenantd(args: &[&str], token: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenantd"));
    command.args(args);
    for variable in ["TENANTD_SERVER", "TENANTD_PLATFORM_TOKEN", "TENANTD_LOG_FORMAT", "RUST_LOG"] {
        command.env_remove(variable);
    }
    if let Some(token) = token {
        command.env("TENANTD_PLATFORM_TOKEN", token);
    }
    let output =
        tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run the tenantd binary");
    Run {
        code: output.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn string<'value>(value: &'value Value, field: &str) -> &'value str {
    value[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {value}"))
}

#[tokio::test]
async fn health_prints_serving_and_exits_zero_when_the_server_is_ready() {
    let server = CliServer::ready().await;
    for service in ["", "liveness", "tenantd.v1.TenantService"] {
        let run = server.run(&["health", "--service", service]).await;
        assert_eq!((run.code, run.stdout.as_str()), (0, "SERVING\n"), "service {service:?}: {run:?}");
    }
    // No --service means readiness; a server address without a scheme is plaintext HTTP/2.
    let address = server.address.trim_start_matches("http://").to_owned();
    let run = tenantd(&["health", "--server", &address], None).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, "SERVING\n"), "{run:?}");
    server.stop().await;
}

#[tokio::test]
async fn health_exits_one_while_the_server_is_not_ready() {
    // Not migrated: readiness stays NOT_SERVING while liveness is SERVING.
    let database = create_database().await;
    let server = CliServer::start(database).await;
    server.wait_until_serving("liveness").await;
    let live = server.run(&["health", "--service", "liveness"]).await;
    assert_eq!((live.code, live.stdout.as_str()), (0, "SERVING\n"), "positive control: {live:?}");
    let ready = server.run(&["health"]).await;
    assert_eq!((ready.code, ready.stdout.as_str()), (1, "NOT_SERVING\n"), "{ready:?}");
    server.stop().await;
}

#[tokio::test]
async fn health_exits_one_for_a_service_the_server_does_not_know() {
    let server = CliServer::ready().await;
    let known = server.run(&["health", "--service", "postgres"]).await;
    assert_eq!(known.code, 0, "positive control: {known:?}");
    let unknown = server.run(&["health", "--service", "no.such.Service"]).await;
    assert_eq!((unknown.code, unknown.stdout.as_str()), (1, "SERVICE_UNKNOWN\n"), "{unknown:?}");
    server.stop().await;
}

#[tokio::test]
async fn health_exits_two_quickly_when_nothing_listens() {
    let address = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let run = tenantd(&["health", "--server", &address], None).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("cannot reach the server"), "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_tenant_is_created_read_listed_updated_suspended_resumed_and_deleted_through_the_cli() {
    let server = CliServer::ready().await;
    let slug = unique_slug("cli");
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = [
        "tenants",
        "create",
        "--slug",
        &slug,
        "--display-name",
        "CLI Corp",
        "--label",
        "tier=gold",
        "--domain",
        &format!("{slug}.example.com"),
        "--channel",
        &format!("slack:T-{slug}"),
        "--request-id",
        &request_id,
    ];
    let created = server.json(&create).await;
    let id = string(&created, "id").to_owned();
    assert_eq!(string(&created, "slug"), slug);
    assert_eq!(string(&created, "displayName"), "CLI Corp");
    assert_eq!(string(&created, "state"), "ACTIVE");
    assert_eq!(created["labels"], serde_json::json!({ "tier": "gold" }));
    assert_eq!(created["domains"], serde_json::json!([format!("{slug}.example.com")]));
    assert_eq!(
        created["channelBindings"],
        serde_json::json!([{ "channelType": "slack", "externalId": format!("T-{slug}") }])
    );
    assert!(created["createTime"].is_string() && created["deleteTime"].is_null(), "{created}");

    // The same request id replays the first response rather than creating a second tenant.
    assert_eq!(server.json(&create).await["id"], created["id"]);

    let by_id = server.json(&["tenants", "get", &id]).await;
    let by_slug = server.json(&["tenants", "get", "--slug", &slug]).await;
    assert_eq!((&by_id["slug"], &by_slug["id"]), (&created["slug"], &created["id"]));

    let other = server.json(&["tenants", "create", "--slug", &unique_slug("cli"), "--display-name", "Other"]).await;
    let listed = server.json(&["tenants", "list"]).await;
    let ids: Vec<&str> =
        listed["tenants"].as_array().expect("tenants").iter().map(|tenant| string(tenant, "id")).collect();
    assert_eq!(ids, [id.as_str(), string(&other, "id")], "oldest first");
    assert_eq!(listed["nextPageToken"], "");
    // Paging: one per page, and --all follows every page.
    let first_page = server.json(&["tenants", "list", "--page-size", "1"]).await;
    assert_eq!(first_page["tenants"].as_array().map(Vec::len), Some(1));
    assert_ne!(first_page["nextPageToken"], "");
    let every_page = server.json(&["tenants", "list", "--page-size", "1", "--all"]).await;
    assert_eq!(every_page["tenants"], listed["tenants"]);

    let updated = server
        .json(&[
            "tenants",
            "update",
            &id,
            "--display-name",
            "CLI Corporation",
            "--label",
            "tier=silver",
            "--label",
            "region=eu",
            "--clear-domains",
            "--etag",
            string(&created, "etag"),
        ])
        .await;
    assert_eq!(string(&updated, "displayName"), "CLI Corporation");
    assert_eq!(updated["labels"], serde_json::json!({ "region": "eu", "tier": "silver" }));
    assert_eq!(updated["domains"], serde_json::json!([]));
    assert_eq!(updated["channelBindings"], created["channelBindings"], "not in the update mask, so unchanged");
    // A stale etag is refused.
    let stale =
        server.run(&["tenants", "update", &id, "--display-name", "Nope", "--etag", string(&created, "etag")]).await;
    assert_eq!(stale.code, 1, "{stale:?}");
    assert!(stale.stderr.contains("ABORTED") && stale.stderr.contains("ETAG_MISMATCH"), "{stale:?}");

    let suspended = server.json(&["tenants", "suspend", &id]).await;
    assert_eq!(string(&suspended, "state"), "SUSPENDED");
    let only_suspended = server.json(&["tenants", "list", "--state", "suspended"]).await;
    assert_eq!(only_suspended["tenants"].as_array().map(Vec::len), Some(1));
    assert_eq!(only_suspended["tenants"][0]["id"], created["id"]);
    let resumed = server.json(&["tenants", "resume", &id]).await;
    assert_eq!(string(&resumed, "state"), "ACTIVE");
    let deleted = server.json(&["tenants", "delete", &id]).await;
    assert_eq!(string(&deleted, "state"), "DELETED");
    assert!(deleted["deleteTime"].is_string(), "{deleted}");
    assert_eq!(string(&server.json(&["tenants", "get", &id]).await, "state"), "DELETED");
    server.stop().await;
}

#[tokio::test]
async fn the_table_output_shows_a_tenant_and_lists_tenants_in_columns() {
    let server = CliServer::ready().await;
    let slug = unique_slug("table");
    let created = server.run(&["tenants", "create", "--slug", &slug, "--display-name", "Table Inc"]).await;
    assert_eq!(created.code, 0, "{created:?}");
    let fields: Vec<(&str, &str)> = created
        .stdout
        .lines()
        .map(|line| line.split_once("  ").map(|(name, value)| (name.trim(), value.trim())).expect("name  value"))
        .collect();
    assert!(fields.contains(&("slug", slug.as_str())), "{created:?}");
    assert!(fields.contains(&("state", "ACTIVE")), "{created:?}");

    let listed = server.run(&["tenants", "list"]).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let lines: Vec<Vec<&str>> = listed.stdout.lines().map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["ID", "SLUG", "STATE", "DISPLAY", "NAME", "CREATED"]);
    assert_eq!(lines.len(), 2, "{listed:?}");
    assert_eq!((lines[1][1], lines[1][2]), (slug.as_str(), "ACTIVE"));
    server.stop().await;
}

#[tokio::test]
async fn a_key_is_created_with_its_secret_once_listed_resolved_and_revoked_through_the_cli() {
    let server = CliServer::ready().await;
    let slug = unique_slug("keys");
    let domain = format!("{slug}.example.org");
    let channel = format!("slack:W-{slug}");
    let tenant =
        server.json(&["tenants", "create", "--slug", &slug, "--display-name", "Keys", "--domain", &domain]).await;
    let tenant_id = string(&tenant, "id").to_owned();
    server.json(&["tenants", "update", &tenant_id, "--channel", &channel]).await;
    let other = server.json(&["tenants", "create", "--slug", &unique_slug("keys"), "--display-name", "Other"]).await;

    let created = server
        .json(&[
            "keys",
            "create",
            "--tenant",
            &tenant_id,
            "--name",
            "ci deploys",
            "--scope",
            "read",
            "--scope",
            "write",
            "--expire-time",
            "2099-01-01T00:00:00Z",
        ])
        .await;
    let secret = string(&created, "secret").to_owned();
    let key = &created["apiKey"];
    let key_id = string(key, "id").to_owned();
    assert!(secret.starts_with("tdk_"), "{created}");
    assert_eq!(string(key, "tenantId"), tenant_id);
    assert_eq!(string(key, "displayName"), "ci deploys");
    assert_eq!(key["scopes"], serde_json::json!(["READ", "WRITE"]));
    assert_eq!(string(key, "expireTime"), "2099-01-01T00:00:00Z");
    assert!(key["revokeTime"].is_null(), "{created}");

    // Every identifier resolves to the tenant; the other tenant is the positive control.
    for identifier in
        [["--slug", slug.as_str()], ["--domain", &domain], ["--channel", &channel], ["--api-key", &secret]]
    {
        let resolved = server.json(&["resolve", identifier[0], identifier[1]]).await;
        assert_eq!(string(&resolved, "id"), tenant_id, "resolve {identifier:?}");
    }
    let resolved_other = server.json(&["resolve", "--id", string(&other, "id")]).await;
    assert_eq!(resolved_other["id"], other["id"]);

    let listed = server.json(&["keys", "list", "--tenant", &tenant_id]).await;
    let keys = listed["apiKeys"].as_array().expect("apiKeys");
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(string(&keys[0], "id"), key_id);
    assert!(!listed.to_string().contains(&secret), "a listing never carries the secret");
    let other_keys = server.json(&["keys", "list", "--tenant", string(&other, "id")]).await;
    assert_eq!(other_keys["apiKeys"], serde_json::json!([]), "keys are per tenant");

    let revoked = server.json(&["keys", "revoke", "--tenant", &tenant_id, &key_id]).await;
    assert_eq!(string(&revoked, "id"), key_id);
    assert!(revoked["revokeTime"].is_string(), "{revoked}");
    let listed = server.json(&["keys", "list", "--tenant", &tenant_id]).await;
    assert!(listed["apiKeys"][0]["revokeTime"].is_string(), "{listed}");
    let refused = server.run(&["resolve", "--api-key", &secret]).await;
    assert_eq!(refused.code, 1, "a revoked key no longer resolves: {refused:?}");
    assert!(refused.stderr.contains("NOT_FOUND") && refused.stderr.contains("TENANT_NOT_FOUND"), "{refused:?}");

    // The table form of a new key shows the secret, and says on stderr that it is shown once.
    let table = server.run(&["keys", "create", "--tenant", &tenant_id, "--name", "table", "--scope", "read"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.lines().any(|line| line.starts_with("secret") && line.contains("tdk_")), "{table:?}");
    assert!(table.stderr.contains("shown only this once"), "{table:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_tenant_fails_with_not_found_and_its_reason_on_stderr() {
    let server = CliServer::ready().await;
    let slug = unique_slug("known");
    let known = server.json(&["tenants", "create", "--slug", &slug, "--display-name", "Known"]).await;
    let found = server.run(&["tenants", "get", string(&known, "id")]).await;
    assert_eq!(found.code, 0, "positive control: {found:?}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = server.run(&["tenants", "get", &unknown, "--output", "json"]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stdout.is_empty(), "nothing on stdout: {missing:?}");
    assert!(missing.stderr.starts_with("error: NOT_FOUND: "), "{missing:?}");
    assert!(missing.stderr.contains("reason: TENANT_NOT_FOUND"), "{missing:?}");

    // Invalid input shows the field violations too.
    let invalid = server.run(&["tenants", "create", "--slug", "Not A Slug", "--display-name", "X"]).await;
    assert_eq!(invalid.code, 1, "{invalid:?}");
    assert!(invalid.stderr.contains("INVALID_ARGUMENT") && invalid.stderr.contains("field tenant.slug"), "{invalid:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_unauthenticated_and_a_missing_token_is_a_usage_error() {
    let server = CliServer::ready().await;
    let right = tenantd(&["tenants", "list", "--server", &server.address, "--token", PLATFORM_TOKEN], None).await;
    assert_eq!(right.code, 0, "positive control, token by flag: {right:?}");

    let wrong = tenantd(&["tenants", "list", "--server", &server.address, "--token", "not-the-token"], None).await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stderr.contains("UNAUTHENTICATED") && wrong.stderr.contains("reason: CREDENTIALS_INVALID"),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("not-the-token"), "the token is never echoed: {wrong:?}");

    let missing = tenantd(&["tenants", "list", "--server", &server.address], None).await;
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("TENANTD_PLATFORM_TOKEN"), "{missing:?}");

    let unreachable = tenantd(&["tenants", "list", "--server", &format!("127.0.0.1:{}", free_port())], Some("x")).await;
    assert_eq!(unreachable.code, 2, "{unreachable:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_operator_is_created_used_as_the_credential_listed_and_revoked_through_the_cli() {
    let server = CliServer::ready().await;
    let with_key = |key: &str, args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--server", &server.address, "--output", "json"]);
        let key = key.to_owned();
        let full: Vec<String> = full.into_iter().map(str::to_owned).collect();
        async move { tenantd(&full.iter().map(String::as_str).collect::<Vec<_>>(), Some(&key)).await }
    };
    let created = server.json(&["operators", "create", "--name", "alice@example.com", "--role", "admin"]).await;
    let admin_key = string(&created, "secret").to_owned();
    let admin = &created["operator"];
    let admin_id = string(admin, "id").to_owned();
    assert!(admin_key.starts_with("tdo_"), "{created}");
    assert_eq!((string(admin, "role"), string(admin, "createdBy")), ("ADMIN", "bootstrap"));

    // The operator key is the CLI's credential wherever the platform token was.
    let viewer = with_key(&admin_key, &["operators", "create", "--name", "dashboards", "--role", "viewer"]).await;
    assert_eq!(viewer.code, 0, "{viewer:?}");
    let viewer = viewer.json();
    let viewer_key = string(&viewer, "secret").to_owned();
    let viewer_id = string(&viewer["operator"], "id").to_owned();
    assert_eq!(string(&viewer["operator"], "createdBy"), format!("operator:{admin_id}"));
    let listed = with_key(&viewer_key, &["tenants", "list"]).await;
    assert_eq!(listed.code, 0, "control: a viewer lists tenants: {listed:?}");
    let denied =
        with_key(&viewer_key, &["tenants", "create", "--slug", &unique_slug("cli"), "--display-name", "X"]).await;
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(denied.stderr.contains("OPERATOR_ROLE_INSUFFICIENT"), "{denied:?}");

    let operators = with_key(&admin_key, &["operators", "list"]).await.json();
    let ids: Vec<&str> =
        operators["operators"].as_array().expect("operators").iter().map(|o| string(o, "id")).collect();
    assert_eq!(ids, [admin_id.as_str(), viewer_id.as_str()]);
    assert!(!operators.to_string().contains(&viewer_key[26..]), "a listing never carries a key");
    let got = with_key(&admin_key, &["operators", "get", &viewer_id]).await.json();
    assert_eq!(string(&got, "role"), "VIEWER");

    let revoked = with_key(&admin_key, &["operators", "revoke", &viewer_id]).await.json();
    assert!(revoked["revokeTime"].is_string(), "{revoked}");
    assert_eq!(string(&revoked, "revokedBy"), format!("operator:{admin_id}"));
    let refused = with_key(&viewer_key, &["tenants", "list"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("OPERATOR_KEY_REVOKED"), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn events_watch_prints_json_lines_and_continues_exactly_from_its_last_cursor() {
    let server = CliServer::ready().await;
    let since = chrono::Utc::now().to_rfc3339();
    let created = server.json(&["tenants", "create", "--slug", &unique_slug("clev"), "--display-name", "Ev"]).await;
    let tenant = string(&created, "id").to_owned();
    let run = server.run(&["events", "watch", "--since", &since, "--tenant", &tenant]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<Value> = run.stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert_eq!(string(&lines[0], "eventType"), "tenant.create");
    assert_eq!(string(&lines[0], "tenantId"), tenant);
    let cursor = run.stderr.lines().find_map(|line| line.strip_prefix("cursor: ")).expect("the last cursor").to_owned();

    // From that cursor: only what happened since.
    server.run(&["tenants", "suspend", &tenant]).await;
    let run = server.run(&["events", "watch", "--from-cursor", &cursor, "--tenant", &tenant]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let types: Vec<String> = run
        .stdout
        .lines()
        .map(|line| string(&serde_json::from_str::<Value>(line).expect("JSON"), "eventType").to_owned())
        .collect();
    assert_eq!(types, ["tenant.suspend"], "{run:?}");

    // A damaged cursor is refused with its field.
    let run = server.run(&["events", "watch", "--from-cursor", "garbage"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("EVENT_CURSOR_INVALID") && run.stderr.contains("field cursor"), "{run:?}");
    server.stop().await;
}

#[tokio::test]
async fn tenants_are_put_on_a_plan_and_taken_off_it_through_the_cli() {
    use tenantd::proto::plan_service_client::PlanServiceClient;
    let server = CliServer::ready().await;
    let channel = Channel::from_shared(server.address.clone()).expect("uri").connect_lazy();
    let plan = unique_slug("cliplan");
    PlanServiceClient::with_interceptor(channel, crate::helpers::Metadata::platform())
        .create_plan(tenantd::proto::CreatePlanRequest {
            plan: Some(crate::plans::plan_with_users(&plan, 3)),
            ..Default::default()
        })
        .await
        .expect("create plan");
    let unknown = server
        .run(&["tenants", "create", "--slug", &unique_slug("cli"), "--display-name", "P", "--plan", &unique_slug("no")])
        .await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("PLAN_UNKNOWN"), "{unknown:?}");
    let created = server
        .json(&["tenants", "create", "--slug", &unique_slug("cli"), "--display-name", "P", "--plan", &plan])
        .await;
    assert_eq!(string(&created, "plan"), plan);
    let id = string(&created, "id").to_owned();
    let shown = server.run(&["tenants", "get", &id]).await;
    assert!(shown.stdout.lines().any(|line| line.contains("plan") && line.contains(&plan)), "{shown:?}");
    let off = server.json(&["tenants", "update", &id, "--clear-plan"]).await;
    assert_eq!(string(&off, "plan"), "");
    server.stop().await;
}

#[tokio::test]
async fn tenants_export_writes_an_archive_that_tenants_import_recreates_and_a_changed_one_is_refused() {
    let server = CliServer::ready().await;
    let slug = unique_slug("cli-arch");
    let tenant = server.json(&["tenants", "create", "--slug", &slug, "--display-name", "Archived"]).await;
    let id = string(&tenant, "id").to_owned();
    let file = std::env::temp_dir().join(format!("tenantd-cli-{id}.jsonl"));
    let path = file.to_str().expect("utf-8 path");
    let exported = server.json(&["tenants", "export", &id, "--file", path]).await;
    assert_eq!((exported["kind"].as_str(), exported["done"].as_bool()), (Some("export_tenant"), Some(true)));
    let bytes = std::fs::read(&file).expect("the archive was written");
    assert!(bytes.starts_with(b"{\"format\":\"tenantd-archive\""), "the manifest comes first");

    let mut changed = bytes.clone();
    let at = changed.len() - 5;
    changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
    let changed_file = std::env::temp_dir().join(format!("tenantd-cli-{id}-changed.jsonl"));
    std::fs::write(&changed_file, &changed).expect("write");
    let refused = server
        .run(&["tenants", "import", "--file", changed_file.to_str().expect("utf-8"), "--slug", &unique_slug("cli-bad")])
        .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("ARCHIVE_INVALID"), "{refused:?}");

    let new_slug = unique_slug("cli-back");
    let imported = server.json(&["tenants", "import", "--file", path, "--slug", &new_slug]).await;
    assert_eq!((imported["kind"].as_str(), imported["done"].as_bool()), (Some("import_tenant"), Some(true)));
    let new_id = string(&imported, "tenantId").to_owned();
    assert_ne!(new_id, id, "a new tenant id");
    let got = server.json(&["tenants", "get", &new_id]).await;
    assert_eq!((string(&got, "slug"), string(&got, "state")), (new_slug.as_str(), "ACTIVE"));
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&changed_file);
}

#[tokio::test]
async fn a_deleted_tenant_is_purged_with_a_wait_and_its_receipt_shown_through_the_cli() {
    let server = CliServer::ready().await;
    let created = server.json(&["tenants", "create", "--slug", &unique_slug("clipurge"), "--display-name", "P"]).await;
    let id = string(&created, "id").to_owned();
    // Refused while the tenant lives, with the reason on stderr.
    let refused = server.run(&["tenants", "purge", &id]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("TENANT_NOT_DELETED"), "{refused:?}");
    let none = server.run(&["tenants", "purge-receipt", &id]).await;
    assert!(none.stderr.contains("PURGE_RECEIPT_NOT_FOUND"), "{none:?}");
    // Positive control: deleted, it is purged; --wait prints the finished operation.
    server.json(&["tenants", "delete", &id]).await;
    let purged = server.json(&["tenants", "purge", &id, "--wait"]).await;
    assert_eq!(purged["done"], true, "{purged}");
    assert_eq!(string(&purged, "kind"), "purge_tenant");
    let receipt = server.json(&["tenants", "purge-receipt", &id]).await;
    assert_eq!(string(&receipt, "tenantId"), id);
    assert_eq!(string(&receipt, "operation"), string(&purged, "name"));
    assert_eq!(receipt["rowsFound"], 0);
    assert_eq!(string(&receipt, "purgedBy"), "bootstrap");
    let table = server.run(&["tenants", "purge-receipt", &id]).await;
    assert!(table.stdout.lines().any(|line| line.starts_with("rows found") && line.ends_with('0')), "{table:?}");
    let shown = server.json(&["tenants", "get", &id]).await;
    assert_eq!(string(&shown, "state"), "PURGED");
}

#[tokio::test]
async fn a_tenants_limits_are_overridden_and_lifted_to_unlimited_through_the_cli() {
    use tenantd::proto::plan_service_client::PlanServiceClient;
    let server = CliServer::ready().await;
    let channel = Channel::from_shared(server.address.clone()).expect("uri").connect_lazy();
    let plan = unique_slug("cliover");
    PlanServiceClient::with_interceptor(channel, crate::helpers::Metadata::platform())
        .create_plan(tenantd::proto::CreatePlanRequest {
            plan: Some(crate::plans::plan_with_users(&plan, 3)),
            ..Default::default()
        })
        .await
        .expect("create plan");
    let created = server
        .json(&["tenants", "create", "--slug", &unique_slug("cli"), "--display-name", "O", "--plan", &plan])
        .await;
    let id = string(&created, "id").to_owned();
    assert!(created["limitOverrides"].is_null(), "no overrides yet: {created}");

    let updated =
        server.json(&["tenants", "update", &id, "--override", "tenant_rate=5/10", "--unlimited", "max_users"]).await;
    assert_eq!(updated["limitOverrides"]["tenantRate"], serde_json::json!({ "perSecond": 5, "burst": 10 }));
    assert_eq!(updated["limitOverrides"]["unlimited"], serde_json::json!(["max_users"]));
    let shown = server.run(&["tenants", "get", &id]).await;
    assert!(
        shown.stdout.lines().any(|line| line.contains("overrides") && line.contains("unlimited: max_users")),
        "{shown:?}"
    );
    // Setting and lifting the same limit is refused by the server; an unknown name by the CLI.
    let both = server.run(&["tenants", "update", &id, "--override", "max_users=7", "--unlimited", "max_users"]).await;
    assert_eq!(both.code, 1, "{both:?}");
    assert!(both.stderr.contains("LIMITS_INVALID"), "{both:?}");
    let unknown = server.run(&["tenants", "update", &id, "--override", "max_people=7"]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    let cleared = server.json(&["tenants", "update", &id, "--clear-overrides"]).await;
    assert!(cleared["limitOverrides"].is_null(), "{cleared}");
    server.stop().await;
}
