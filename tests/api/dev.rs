//! `tenantd dev`, the real binary: its own PostgreSQL, a demo tenant the printed lines name,
//! and on SIGINT a clean stop of everything it started.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tenantd::proto::tenant_service_client::TenantServiceClient;
use tenantd::proto::user_service_client::UserServiceClient;
use tenantd::proto::{CreateUserRequest, GetTenantRequest, ListUsersRequest, User, get_tenant_request};
use tonic::transport::Channel;

use crate::helpers::{KillOnDrop, Metadata, redis_url};

/// What `tenantd dev` printed for the first calls.
#[derive(Debug, Default)]
struct Printed {
    server: String,
    postgres_port: u16,
    tenant_id: String,
    api_key: String,
    platform_token: String,
}

/// Reads `dev`'s stdout until the last line to paste, then keeps draining it.
fn read_banner(stdout: std::process::ChildStdout) -> Printed {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut printed = Printed::default();
        let mut sender = Some(sender);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["server", url] => printed.server = (*url).to_owned(),
                ["postgres", address, ..] => {
                    let port = address.trim_end_matches(',').rsplit(':').next().unwrap_or_default();
                    printed.postgres_port = port.parse().unwrap_or_default();
                }
                ["demo", "tenant", _slug, id] => printed.tenant_id = (*id).to_owned(),
                ["api", "key", key] => printed.api_key = (*key).to_owned(),
                ["export", _, token] => {
                    printed.platform_token = token.trim_start_matches("TENANTD_PLATFORM_TOKEN=").to_owned()
                }
                _ => {}
            }
            if line.contains("UserService/ListUsers")
                && let Some(sender) = sender.take()
            {
                let _ = sender.send(std::mem::take(&mut printed));
            }
        }
    });
    receiver.recv_timeout(Duration::from_secs(120)).expect("tenantd dev printed its lines")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenantd_dev_serves_a_demo_tenant_and_sigint_stops_its_postgres_and_removes_its_data() {
    // A temporary directory of the test's own, so that dev's data directory in it can be seen
    // to go. PostgreSQL runs as `postgres` when the tests run as root: it must enter it.
    let temp = std::env::temp_dir().join(format!("tdt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    std::fs::create_dir(&temp).expect("temp dir");
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["dev", "--listen-addr=127.0.0.1:0", &format!("--redis-url={}", redis_url())])
        .env("TMPDIR", &temp)
        .env_remove("TENANTD_PLATFORM_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tenantd dev");
    let stdout = child.stdout.take().expect("stdout");
    let process = KillOnDrop(Some(child));
    let printed = read_banner(stdout);
    let data_dirs: Vec<PathBuf> =
        std::fs::read_dir(&temp).expect("read temp").map(|entry| entry.expect("entry").path()).collect();
    assert_eq!(data_dirs.len(), 1, "control: the data directory is in TMPDIR: {data_dirs:?}");
    assert!(data_dirs[0].join("PG_VERSION").exists(), "control: a cluster lives there");
    assert!(std::net::TcpStream::connect(("127.0.0.1", printed.postgres_port)).is_ok(), "control: PostgreSQL listens");
    assert!(printed.platform_token.starts_with("dev-"), "a random token, not a well-known one: {printed:?}");

    let channel = Channel::from_shared(printed.server.clone()).expect("uri").connect().await.expect("connect");
    let mut tenants = TenantServiceClient::with_interceptor(channel.clone(), Metadata::bearer(&printed.platform_token));
    let tenant = tenants
        .get_tenant(GetTenantRequest { selector: Some(get_tenant_request::Selector::Id(printed.tenant_id.clone())) })
        .await
        .expect("GetTenant of the printed demo tenant")
        .into_inner();
    assert_eq!(tenant.slug, tenantd::dev::DEMO_SLUG);
    let mut users = UserServiceClient::with_interceptor(channel, Metadata::bearer(&printed.api_key));
    users
        .create_user(CreateUserRequest {
            user: Some(User { email: "ada@demo.example".into(), ..Default::default() }),
            ..Default::default()
        })
        .await
        .expect("the printed API key writes the demo tenant's data plane");
    let listed = users.list_users(ListUsersRequest::default()).await.expect("ListUsers").into_inner();
    assert_eq!(listed.users.iter().map(|user| user.email.as_str()).collect::<Vec<_>>(), ["ada@demo.example"]);

    let kill = Command::new("kill").args(["-INT", &process.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let status = process.wait_for(Duration::from_secs(60)).await.expect("tenantd dev exited after SIGINT");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", printed.postgres_port)).is_err(),
        "the PostgreSQL it started is stopped"
    );
    let left: Vec<_> = std::fs::read_dir(&temp).expect("read temp").collect();
    assert!(left.is_empty(), "the temporary data directory is gone: {left:?}");
    std::fs::remove_dir(&temp).expect("remove temp");
}
