//! Throwaway PostgreSQL and Redis servers for fault tests, on free ports, so that tests can
//! stop and restart them. The machine's shared servers are never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::Leaf;

/// A free TCP port on loopback (free when this returns; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|output| output.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// The directory of PostgreSQL's server binaries: `TENANTD_TEST_PG_BINDIR`, or the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("TENANTD_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set TENANTD_TEST_PG_BINDIR)")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").1
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
fn pg_command(tool: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(tool);
        command
    } else {
        Command::new(tool)
    }
}

/// A PostgreSQL cluster of its own, trust authentication, on a free port.
pub struct ThrowawayPostgres {
    directory: PathBuf,
    bindir: PathBuf,
    pub port: u16,
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
        let bindir = pg_bindir();
        let directory = std::env::temp_dir().join(format!("tenantd-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).expect("create data directory");
        if running_as_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(&directory).status().expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        let status = pg_command(&bindir.join("initdb"))
            .args(["-D"])
            .arg(&directory)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 100\n",
            directory.display()
        );
        let config = directory.join("postgresql.conf");
        let mut contents = std::fs::read_to_string(&config).expect("read postgresql.conf");
        contents.push_str(&settings);
        if let Some(certificate) = tls {
            contents.push_str(&enable_ssl(&directory, certificate));
        }
        std::fs::write(&config, contents).expect("write postgresql.conf");
        let postgres = Self { directory, bindir, port };
        postgres.resume();
        postgres
    }

    /// Starts the (stopped) server again, on the same port and data.
    pub fn resume(&self) {
        let status = pg_command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.directory)
            .arg("-l")
            .arg(self.directory.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Stops the server abruptly, as a crash or an outage would.
    pub fn kill(&self) {
        let status = pg_command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.directory)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status()
            .expect("run pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }

    /// A URL for `user` on `database`.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
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
    if running_as_root() {
        for file in [&cert, &key, &hba] {
            let status = Command::new("chown").arg("postgres:postgres").arg(file).status().expect("chown");
            assert!(status.success(), "chown {}", file.display());
        }
    }
    format!("ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n", cert.display(), key.display())
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.directory)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.directory);
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
