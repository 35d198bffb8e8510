//! A PostgreSQL cluster of its own, on a free loopback port, for `tenantd dev` and the fault
//! tests: `initdb` and `pg_ctl` from the machine's PostgreSQL install. When tenantd runs as
//! root, they run as the `postgres` user (initdb refuses root), and the data directory is
//! handed to that user.
//!
//! The cluster listens on 127.0.0.1 only, with its Unix socket inside the data directory
//! (which only its owner can enter), and is never the machine's shared server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// A free TCP port on loopback (free when this returns: another process may take it before
/// the caller binds it, which is unlikely enough for a dev server and tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Folders PostgreSQL's server binaries are usually installed in, beyond `PATH`: Debian and
/// Ubuntu (`/usr/lib/postgresql/<version>/bin`), RHEL and Fedora (`/usr/pgsql-<version>/bin`),
/// a source build (`/usr/local/pgsql/bin`), Homebrew (`<prefix>/opt/postgresql@<version>/bin`).
/// The newest version wins.
fn usual_bindirs() -> Vec<PathBuf> {
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    let mut collect = |parent: &str, prefix: &str, suffix: &str| {
        let Ok(entries) = std::fs::read_dir(parent) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(|name| name.strip_prefix(prefix)) else { continue };
            let Ok(version) = version.split('.').next().unwrap_or_default().parse::<u32>() else { continue };
            versioned.push((version, entry.path().join(suffix)));
        }
    };
    collect("/usr/lib/postgresql", "", "bin");
    collect("/usr", "pgsql-", "bin");
    collect("/opt/homebrew/opt", "postgresql@", "bin");
    collect("/usr/local/opt", "postgresql@", "bin");
    versioned.sort();
    let mut found: Vec<PathBuf> = versioned.into_iter().rev().map(|(_, path)| path).collect();
    found.push(PathBuf::from("/usr/local/pgsql/bin"));
    found
}

/// The folder holding `initdb` and `pg_ctl`: `explicit` if given, else the first folder on
/// `PATH` that has both, else the newest of the usual install folders.
pub fn find_bindir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = explicit {
        if has_tools(dir) {
            return Ok(dir.to_owned());
        }
        bail!("{} has no initdb and pg_ctl", dir.display());
    }
    let on_path = std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    let candidates: Vec<PathBuf> = on_path;
    candidates.into_iter().chain(usual_bindirs()).find(|dir| has_tools(dir)).context(
        "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/<version>/bin, \
         /usr/pgsql-<version>/bin, /usr/local/pgsql/bin or Homebrew's opt/postgresql@<version>/bin; install \
         PostgreSQL's server package or name the folder",
    )
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|output| output.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// How TCP connections to the cluster authenticate. Connections over its Unix socket (in the
/// data directory, reachable only by its owner) are always trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAuthentication {
    /// Any role, no password: for tests, whose clusters live for one test.
    Trust,
    /// SCRAM-SHA-256 passwords: a role without a password cannot log in over TCP.
    Password,
}

/// How [`Cluster::stop`] stops the server (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Rolls back open transactions and shuts down cleanly.
    Fast,
    /// Stops at once, as a crash or an outage would; recovery runs at the next start.
    Immediate,
}

/// A PostgreSQL cluster in a data directory of its own, with superuser `postgres`.
#[derive(Debug)]
pub struct Cluster {
    directory: PathBuf,
    bindir: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

impl Cluster {
    /// Creates a cluster in `directory` (created if missing; it must be empty) with the tools
    /// in `bindir`, to listen on a free port. Not started.
    pub fn init(bindir: &Path, directory: &Path, authentication: HostAuthentication) -> anyhow::Result<Self> {
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        let cluster = Self::open(bindir, directory)?;
        // `<directory>/.s.PGSQL.<port>` must fit in a Unix socket address (107 bytes).
        if cluster.directory.as_os_str().len() > 80 {
            bail!(
                "{} is too long a path for PostgreSQL's Unix socket in it; use at most 80 bytes",
                directory.display()
            );
        }
        if cluster.as_postgres_user {
            let chown =
                Command::new("chown").arg("postgres:postgres").arg(directory).output().context("running chown")?;
            check("chown the data directory to the postgres user", &chown)?;
        }
        let host_auth = match authentication {
            HostAuthentication::Trust => "--auth-host=trust",
            HostAuthentication::Password => "--auth-host=scram-sha-256",
        };
        let initdb = cluster
            .tool("initdb")
            .arg("-D")
            .arg(directory)
            .args(["-U", "postgres", "--auth-local=trust", host_auth, "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        check("initdb", &initdb)?;
        // The socket in the data directory keeps the cluster off the shared /var/run/postgresql;
        // single quotes in the path are doubled, as postgresql.conf quotes them.
        let socket_directory = directory.display().to_string().replace('\'', "''");
        let settings = format!(
            "\n# tenantd dev\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_directory}'\n\
             fsync = off\nmax_connections = 100\n"
        );
        let config = directory.join("postgresql.conf");
        let mut contents = std::fs::read_to_string(&config).context("reading postgresql.conf")?;
        contents.push_str(&settings);
        std::fs::write(&config, contents).context("writing postgresql.conf")?;
        Ok(cluster)
    }

    /// A cluster that [`Cluster::init`] created earlier in `directory`, to listen on a free
    /// port. Not started.
    pub fn open(bindir: &Path, directory: &Path) -> anyhow::Result<Self> {
        let directory = std::path::absolute(directory).context("resolving the data directory")?;
        Ok(Self {
            directory,
            bindir: bindir.to_owned(),
            port: free_port().context("finding a free port")?,
            as_postgres_user: running_as_root(),
        })
    }

    /// Whether `directory` holds a cluster already.
    pub fn exists_in(directory: &Path) -> bool {
        directory.join("PG_VERSION").is_file()
    }

    /// A PostgreSQL tool, run as the `postgres` user when we are root.
    fn tool(&self, name: &str) -> Command {
        let path = self.bindir.join(name);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        };
        command.stdin(Stdio::null());
        command
    }

    /// Starts the server (again, after a stop) on its port, and waits until it accepts
    /// connections. Its log is `server.log` in the data directory.
    pub fn start(&self) -> anyhow::Result<()> {
        let started = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.directory)
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &format!("-p {}", self.port), "-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        check("pg_ctl start", &started).map_err(|error| {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            error.context(format!("PostgreSQL's log ends: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
        })
    }

    /// Stops the server and waits until it has stopped; a server that is not running is
    /// left as it is.
    pub fn stop(&self, mode: StopMode) -> anyhow::Result<()> {
        if !self.directory.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let stopped = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.directory)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        check("pg_ctl stop", &stopped)
    }

    fn log_file(&self) -> PathBuf {
        self.directory.join("server.log")
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// A URL for `user` on `database` over TCP, with `password` if given.
    pub fn tcp_url(&self, user: &str, password: Option<&str>, database: &str) -> String {
        match password {
            Some(password) => format!("postgres://{user}:{password}@127.0.0.1:{}/{database}", self.port),
            None => format!("postgres://{user}@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Connection settings for `user` on `database` over the Unix socket in the data
    /// directory (always trusted), in the key-value form libpq and tokio-postgres read.
    pub fn socket_settings(&self, user: &str, database: &str) -> String {
        format!("host='{}' port={} user={user} dbname={database}", self.directory.display(), self.port)
    }
}

/// `Ok` if the tool succeeded, else an error with what it printed.
fn check(what: &str, output: &Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let printed = [&output.stderr, &output.stdout].map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned());
    bail!(
        "{what} failed ({}): {}",
        output.status,
        printed.into_iter().filter(|text| !text.is_empty()).collect::<Vec<_>>().join(" | ")
    )
}
