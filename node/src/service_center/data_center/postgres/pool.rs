//! Connections to the region's PostgreSQL: how to reach it (the connection
//! string, and TLS verified against a CA), and a bounded pool that runs
//! each closure of the data center in its own transaction on one of them,
//! off the async threads (docs/ARCHITECTURE.md §12).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::config::SslMode;
use postgres::{Client, Config, IsolationLevel, NoTls};
use tokio::sync::Semaphore;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tx::Statements;
use super::{PgTx, error, migrations};
use crate::Error;

/// Connections one replica holds at most: its share of the server's
/// `max_connections` (100 by default) with room for several replicas.
pub const CONNECTIONS: usize = 8;
/// Of those, how many read-only transactions may use at once, and how
/// many are kept for them: writes queued on one group's lock must not
/// starve the reads that deliver (pushes heard from other replicas,
/// subscriptions' catch-up).
const READ_CONNECTIONS: usize = 4;
/// How long connecting may take before the call fails `Unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds on one statement and on waiting for a row lock (a group held by
/// another replica's transaction): past them the call fails and is retried,
/// instead of holding a connection and its caller forever.
const SESSION_SETTINGS: &str = "SET statement_timeout = '30s'; SET lock_timeout = '10s'; \
     SET idle_in_transaction_session_timeout = '60s'";
/// The longest connection string accepted (it is read from a file).
const MAX_URL_BYTES: usize = 4096;

/// Where the data center's PostgreSQL is, as the service center is told.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A file whose content is the connection string (a `postgresql://`
    /// URL or `key=value` pairs): a mounted Secret's key, so that the
    /// password is never on a command line.
    pub url_file: PathBuf,
    /// PEM CA certificates. With them the connection requires TLS, and
    /// the server's certificate must be issued by one and name the host.
    pub ca_file: Option<PathBuf>,
}

/// How to open a connection: the parsed string and the TLS to use.
#[derive(Clone)]
pub struct Connector {
    config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    /// Reads and checks the settings' files. Errors name the file and
    /// never show the connection string (it holds the password).
    pub fn new(settings: &Settings) -> Result<Self, Error> {
        let invalid = |what: String| {
            Error::FailedPrecondition(format!("the data center's PostgreSQL: {what}"))
        };
        let file = settings.url_file.display();
        let text = std::fs::read_to_string(&settings.url_file)
            .map_err(|e| invalid(format!("connection string file {file}: {e}")))?;
        if text.len() > MAX_URL_BYTES {
            return Err(invalid(format!(
                "connection string file {file} holds more than {MAX_URL_BYTES} bytes"
            )));
        }
        let mut config: Config = text.trim().parse().map_err(|e| {
            invalid(format!(
                "connection string in {file} does not parse ({e}); give a postgresql:// URL \
                 or key=value pairs"
            ))
        })?;
        if config.get_hosts().is_empty() {
            return Err(invalid(format!(
                "connection string in {file} names no host"
            )));
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("meridian-service-center");
        let tls = match &settings.ca_file {
            Some(ca) => {
                let pem = std::fs::read_to_string(ca)
                    .map_err(|e| invalid(format!("CA file {}: {e}", ca.display())))?;
                config.ssl_mode(SslMode::Require);
                let client = crate::trust::tls::database_client(&pem)?;
                Some(MakeRustlsConnect::new(client))
            }
            None if config.get_ssl_mode() == SslMode::Require => {
                return Err(invalid(format!(
                    "the connection string in {file} requires TLS (sslmode=require) but no CA \
                     file was given to verify the server with (--postgres-ca-file)"
                )));
            }
            None => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Self { config, tls })
    }

    /// A connection with the session's bounds set. Blocks.
    pub fn connect(&self) -> Result<Client, Error> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| error("connecting", e))?;
        client
            .batch_execute(SESSION_SETTINGS)
            .map_err(|e| error("setting the session's bounds", e))?;
        Ok(client)
    }
}

/// At most [`CONNECTIONS`] connections, kept open between calls. One that
/// broke (the server restarted, the network failed) is dropped rather than
/// returned, and the next call opens a new one.
#[derive(Clone)]
pub struct Pool {
    connector: Connector,
    idle: Arc<Idle>,
    /// Write transactions at once.
    writes: Arc<Semaphore>,
    /// Read-only transactions at once.
    reads: Arc<Semaphore>,
}

/// The open connections not in use, each with its prepared statements.
struct Idle(Mutex<Vec<(Client, Statements)>>);

impl Idle {
    fn take(&self) -> Option<(Client, Statements)> {
        self.0.lock().expect("connection pool").pop()
    }

    fn put(&self, connection: (Client, Statements)) {
        self.0.lock().expect("connection pool").push(connection);
    }
}

/// Closing a synchronous client blocks on its runtime, which must not
/// happen on an async thread, where the last handle may well be dropped.
impl Drop for Idle {
    fn drop(&mut self) {
        let clients = std::mem::take(self.0.get_mut().expect("connection pool"));
        if !clients.is_empty() {
            let _ = std::thread::Builder::new()
                .name("data-center-close".into())
                .spawn(move || drop(clients));
        }
    }
}

impl Pool {
    /// Connects and brings the schema up to this build's version (safe
    /// while other replicas do the same). Blocks.
    pub fn open(connector: Connector) -> Result<Self, Error> {
        let mut client = connector.connect()?;
        let applied = migrations::migrate(&mut client)?;
        tracing::info!(
            applied = ?applied,
            version = migrations::current_version(),
            "data center on PostgreSQL"
        );
        Ok(Self {
            connector,
            idle: Arc::new(Idle(Mutex::new(vec![(client, Statements::default())]))),
            writes: Arc::new(Semaphore::new(CONNECTIONS - READ_CONNECTIONS)),
            reads: Arc::new(Semaphore::new(READ_CONNECTIONS)),
        })
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Runs `f` in one READ COMMITTED transaction (read-only when not
    /// `writes`), committed when `f` succeeds and rolled back when it fails.
    /// Returns once the commit is durable on the server.
    pub async fn run<T, F>(&self, writes: bool, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut PgTx<'_>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let permits = if writes { &self.writes } else { &self.reads };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the data center is shutting down".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = pool.idle.take();
            let (mut client, mut statements) = match pooled {
                Some((client, statements)) if !client.is_closed() => (client, statements),
                _ => (pool.connector.connect()?, Statements::default()),
            };
            let result = transaction(&mut client, &mut statements, writes, f);
            if !client.is_closed() {
                pool.idle.put((client, statements));
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("data center call: {e}")))?
    }
}

fn transaction<T>(
    client: &mut Client,
    statements: &mut Statements,
    writes: bool,
    f: impl FnOnce(&mut PgTx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .read_only(!writes)
        .start()
        .map_err(|e| error("starting a transaction", e))?;
    let mut tx = PgTx::cached(tx, statements);
    let value = f(&mut tx)?; // dropping `tx` rolls it back
    tx.commit()?;
    Ok(value)
}
