//! Throwaway PostgreSQL and Redis servers for fault tests, on free ports, so that tests can
//! stop and restart them. The machine's shared servers are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Leaf;
use tenantd::devdb::{Cluster, HostAuthentication, StopMode};

/// A free TCP port on loopback (free when this returns; good enough for tests).
pub fn free_port() -> u16 {
    tenantd::devdb::free_port().expect("a free port")
}

/// A PostgreSQL cluster of its own ([`tenantd::devdb::Cluster`]), trust authentication, on a
/// free port. The tools come from `TENANTD_TEST_PG_BINDIR`, else from where `tenantd dev`
/// looks for them.
pub struct ThrowawayPostgres {
    cluster: Cluster,
}

impl ThrowawayPostgres {
    /// Initialises and starts a cluster.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Initialises and starts a cluster with `ssl = on` serving `certificate`, that refuses
    /// every connection without TLS (`hostnossl … reject`).
    pub fn start_with_tls(certificate: &Leaf) -> Self {
        Self::start_with(Some(certificate))
    }

    fn start_with(tls: Option<&Leaf>) -> Self {
        let explicit = std::env::var_os("TENANTD_TEST_PG_BINDIR").map(PathBuf::from);
        let bindir = tenantd::devdb::find_bindir(explicit.as_deref()).expect("PostgreSQL server binaries");
        let directory = std::env::temp_dir().join(format!("tenantd-pg-{}", uuid::Uuid::new_v4().simple()));
        let cluster = Cluster::init(&bindir, &directory, HostAuthentication::Trust).expect("initdb");
        if let Some(certificate) = tls {
            let config = cluster.directory().join("postgresql.conf");
            let mut contents = std::fs::read_to_string(&config).expect("read postgresql.conf");
            contents.push_str(&enable_ssl(cluster.directory(), certificate));
            std::fs::write(&config, contents).expect("write postgresql.conf");
        }
        let postgres = Self { cluster };
        postgres.resume();
        postgres
    }

    /// Starts the (stopped) server again, on the same port and data.
    pub fn resume(&self) {
        self.cluster.start().expect("pg_ctl start");
    }

    /// Stops the server abruptly, as a crash or an outage would.
    pub fn kill(&self) {
        self.cluster.stop(StopMode::Immediate).expect("pg_ctl stop");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// A URL for `user` on `database`.
    pub fn url(&self, user: &str, database: &str) -> String {
        self.cluster.tcp_url(user, None, database)
    }

    /// A raw client for `user` on `database`.
    pub async fn connect(&self, user: &str, database: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url(user, database), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }
}

/// Writes the server's certificate and key into the data directory, makes pg_hba.conf refuse
/// connections without TLS, and returns the settings that turn TLS on.
fn enable_ssl(directory: &Path, certificate: &Leaf) -> String {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (directory.join("server.crt"), directory.join("server.key"));
    std::fs::write(&cert, &certificate.cert).expect("write server.crt");
    std::fs::write(&key, &certificate.key).expect("write server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod server.key");
    let hba = directory.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(&hba, format!("hostnossl all all all reject\n{rules}")).expect("write pg_hba.conf");
    // The files belong to whoever owns the data directory (`postgres` when the tests run as root).
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(directory).expect("data directory metadata");
    for file in [&cert, &key, &hba] {
        std::os::unix::fs::chown(file, Some(owner.uid()), Some(owner.gid())).expect("chown");
    }
    format!("ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n", cert.display(), key.display())
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self.cluster.stop(StopMode::Immediate);
        let _ = std::fs::remove_dir_all(self.cluster.directory());
    }
}

/// A Redis server of its own on a fixed port, which can be stopped and started again.
pub struct ThrowawayRedis {
    pub port: u16,
    child: Option<Child>,
    /// With TLS: the directory holding the certificate and key; Redis then listens with TLS
    /// only (`--port 0 --tls-port`).
    tls: Option<PathBuf>,
}

impl ThrowawayRedis {
    /// Starts Redis on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts Redis on `port` and waits until it answers.
    pub fn start_on(port: u16) -> Self {
        let mut redis = Self { port, child: None, tls: None };
        redis.resume();
        redis
    }

    /// Starts Redis speaking only TLS, with `certificate`, on a free port (clients are not
    /// asked for certificates).
    pub fn start_with_tls(certificate: &Leaf) -> Self {
        let directory = std::env::temp_dir().join(format!("tenantd-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).expect("create directory");
        std::fs::write(directory.join("server.crt"), &certificate.cert).expect("write server.crt");
        std::fs::write(directory.join("server.key"), &certificate.key).expect("write server.key");
        let mut redis = Self { port: free_port(), child: None, tls: Some(directory) };
        redis.resume();
        redis
    }

    /// A Redis URL for it (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port.
    pub fn resume(&mut self) {
        let port = self.port.to_string();
        let mut arguments = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let (cert, key);
        match &self.tls {
            None => arguments.extend(["--port", &port]),
            Some(directory) => {
                cert = directory.join("server.crt").display().to_string();
                key = directory.join("server.key").display().to_string();
                let tls = ["--port", "0", "--tls-port", &port, "--tls-cert-file", &cert, "--tls-key-file", &key];
                arguments.extend(tls);
                arguments.extend(["--tls-auth-clients", "no"]);
            }
        }
        let child = Command::new("redis-server")
            .args(&arguments)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is Redis installed?)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `count` servers are subscribed to cache invalidations on it (a resolver
    /// uses Redis only while subscribed), for at most `within`.
    pub async fn wait_for_subscribers(&self, count: i64, within: Duration) {
        let client = redis::Client::open(self.url()).expect("url");
        let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
        let started = Instant::now();
        loop {
            let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(tenantd::cache::INVALIDATION_CHANNEL)
                .query_async(&mut connection)
                .await
                .expect("numsub");
            if subscribers == count {
                return;
            }
            assert!(started.elapsed() < within, "{subscribers} of {count} servers subscribed within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(directory) = &self.tls {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

/// A Redis Cluster of its own: three masters, each with one replica, on free ports, so that a
/// master can be failed over to its replica.
pub struct ThrowawayRedisCluster {
    /// Ports of every node, masters first (as created).
    pub ports: Vec<u16>,
    children: Vec<Child>,
    directory: PathBuf,
}

impl ThrowawayRedisCluster {
    /// Starts six nodes, creates the cluster with `redis-cli --cluster create` and waits until
    /// every node reports `cluster_state:ok`. A creation that fails (a free port taken by
    /// another test's node between choosing it and binding it) is tried again on new ports.
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-cli --cluster create failed three times: {failures:?}");
    }

    fn try_start() -> Result<Self, String> {
        let directory = std::env::temp_dir().join(format!("tenantd-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).expect("create directory");
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for port in &ports {
            let config = directory.join(format!("nodes-{port}.conf")).display().to_string();
            // The bus port is given too: its default, port + 10000, may be past 65535.
            let bus_port = free_port().to_string();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-port", &bus_port, "--cluster-config-file", &config])
                .args(["--cluster-node-timeout", "2000"])
                .current_dir(&directory)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            children.push(child);
        }
        let started = Instant::now();
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "a cluster node did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        let cluster = Self { ports, children, directory };
        if !created.status.success() {
            // Dropping the cluster stops its nodes and removes its directory.
            return Err(String::from_utf8_lossy(&created.stdout).lines().rev().take(3).collect::<Vec<_>>().join(" | "));
        }
        for port in &cluster.ports {
            while !cluster.cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(started.elapsed() < Duration::from_secs(30), "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(cluster)
    }

    /// The comma-separated seed URLs tenantd is given (every node).
    pub fn urls(&self) -> String {
        self.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// Runs a `redis-cli` command against the node on `port`; its output.
    pub fn cli(&self, port: u16, arguments: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(arguments)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The port of the master serving `key`'s slot, and of its replica (waiting up to 15 s
    /// for the node's view to show the replica: the cluster is ok before every replica has
    /// announced its master).
    pub fn master_and_replica_of(&self, key: &str) -> (u16, u16) {
        let started = Instant::now();
        loop {
            if let Some(found) = self.find_master_and_replica(key) {
                return found;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "the master of {key:?} never showed a replica");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find_master_and_replica(&self, key: &str) -> Option<(u16, u16)> {
        let slot: u16 = self.cli(self.ports[0], &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("a slot");
        let nodes = self.cli(self.ports[0], &["CLUSTER", "NODES"]);
        // <id> <ip:port@bus> <flags> <master-id|-> <ping> <pong> <epoch> <state> <slots...>
        let lines: Vec<Vec<&str>> = nodes.lines().map(|line| line.split_whitespace().collect()).collect();
        let port_of = |fields: &[&str]| -> u16 {
            fields[1].split(['@', ':']).nth(1).and_then(|port| port.parse().ok()).expect("a port")
        };
        let serves = |range: &&str| match range.split_once('-') {
            Some((low, high)) => {
                low.parse::<u16>().is_ok_and(|low| low <= slot) && high.parse::<u16>().is_ok_and(|high| slot <= high)
            }
            None => range.parse::<u16>().is_ok_and(|only| only == slot),
        };
        let master = lines.iter().find(|fields| fields[2].contains("master") && fields.iter().skip(8).any(&serves))?;
        let replica = lines.iter().find(|fields| fields[3] == master[0])?;
        Some((port_of(master), port_of(replica)))
    }
}

impl Drop for ThrowawayRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
