//! A TCP proxy in front of PostgreSQL that records, per connection, what tenantd writes:
//! the frontend protocol messages, grouped into flights. A flight is everything the client
//! sent before it received a reply; the number of flights of a request is its number of
//! round trips, counted at the socket.
//!
//! Replies are held back for [`HOLD`] before they are forwarded, so a client that does not
//! wait (pipelining) has written all it meant to write before any reply reaches it, and a
//! flight boundary can only mean the client waited.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long replies are held back.
const HOLD: Duration = Duration::from_millis(40);

/// One statement-level frontend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A simple query (`Q`): its text is its own query string.
    Simple(String),
    /// Parse (`P`) of a statement.
    Parse(String),
    /// Execute (`E`) of a bound prepared statement, with the statement's SQL.
    Execute(String),
}

impl Sent {
    /// The SQL this message carries or runs.
    pub fn sql(&self) -> &str {
        match self {
            Self::Simple(sql) | Self::Parse(sql) | Self::Execute(sql) => sql,
        }
    }

    /// Whether this message runs a statement (simple query or execute).
    pub fn runs(&self) -> bool {
        !matches!(self, Self::Parse(_))
    }
}

#[derive(Default)]
struct Connection {
    flights: Vec<Vec<Sent>>,
    replied_since_last_send: bool,
    statements: HashMap<String, String>,
    bound: Option<String>,
    pending: Vec<u8>,
    started: bool,
}

/// A running proxy.
pub struct WireProxy {
    pub address: SocketAddr,
    connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>>,
}

impl WireProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let connections: Arc<Mutex<Vec<Arc<Mutex<Connection>>>>> = Arc::default();
        let registry = connections.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let connection = Arc::new(Mutex::new(Connection::default()));
                registry.lock().expect("registry").push(connection.clone());
                tokio::spawn(pump(client, server, connection));
            }
        });
        Self { address, connections }
    }

    /// The flights of every connection so far, by connection. What any client sends next
    /// starts a new flight, so a snapshot is a clean boundary.
    pub fn flights(&self) -> Vec<Vec<Vec<Sent>>> {
        let connections = self.connections.lock().expect("registry");
        let snapshot = |connection: &Arc<Mutex<Connection>>| {
            let mut connection = connection.lock().expect("connection");
            connection.replied_since_last_send = true;
            connection.flights.clone()
        };
        connections.iter().map(snapshot).collect()
    }
}

async fn pump(client: TcpStream, server: TcpStream, connection: Arc<Mutex<Connection>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let recorder = connection.clone();
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                break;
            }
            recorder.lock().expect("connection").record(&buffer[..read]);
            if server_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = server_read.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                break;
            }
            tokio::time::sleep(HOLD).await;
            connection.lock().expect("connection").replied_since_last_send = true;
            if client_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(upstream, downstream);
}

impl Connection {
    fn record(&mut self, bytes: &[u8]) {
        if self.replied_since_last_send || self.flights.is_empty() {
            self.flights.push(Vec::new());
            self.replied_since_last_send = false;
        }
        self.pending.extend_from_slice(bytes);
        loop {
            // Start-up messages (and an SSL request) have no type byte.
            let header = if self.started { 1 } else { 0 };
            if self.pending.len() < header + 4 {
                return;
            }
            let length = u32::from_be_bytes(self.pending[header..header + 4].try_into().expect("4 bytes")) as usize;
            if self.pending.len() < header + length {
                return;
            }
            let message: Vec<u8> = self.pending.drain(..header + length).collect();
            if !self.started {
                // 80877103 is SSLRequest, 80877104 GSSENCRequest: a start-up message follows.
                let code = u32::from_be_bytes(message[4..8].try_into().expect("4 bytes"));
                self.started = code != 80_877_103 && code != 80_877_104;
                continue;
            }
            self.interpret(message[0], &message[5..]);
        }
    }

    fn interpret(&mut self, kind: u8, body: &[u8]) {
        let mut fields = body.split(|byte| *byte == 0).map(|field| String::from_utf8_lossy(field).into_owned());
        let flight = self.flights.last_mut().expect("a flight");
        match kind {
            b'Q' => flight.push(Sent::Simple(fields.next().unwrap_or_default())),
            b'P' => {
                let name = fields.next().unwrap_or_default();
                let sql = fields.next().unwrap_or_default();
                flight.push(Sent::Parse(sql.clone()));
                self.statements.insert(name, sql);
            }
            b'B' => {
                let _portal = fields.next();
                let name = fields.next().unwrap_or_default();
                self.bound = self.statements.get(&name).cloned();
            }
            b'E' => flight.push(Sent::Execute(self.bound.take().unwrap_or_default())),
            _ => {}
        }
    }
}
