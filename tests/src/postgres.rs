//! A real PostgreSQL server for tests: Debian's packages (installed by
//! `tests/postgres/install`), one throwaway server per [`Postgres`], on
//! 127.0.0.1 and a free port, with password (SCRAM) authentication.
//!
//! ```no_run
//! use meridian_tests::postgres::Postgres;
//! let mut server = Postgres::start().unwrap();
//! let url = server.create_database("eu").unwrap();
//! // ... connect to `url` ...
//! server.restart().unwrap(); // a crash and recovery, on the same data
//! // Dropping `server` stops it and removes its directory.
//! ```
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as
//! root the server runs as `nobody`, in a directory that user owns. A
//! watchdog stops the server and removes its directory if the test process
//! dies without dropping it (`kill -9`).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a start or a stop may take before the harness gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// The role the tests connect as; it owns every database.
pub const USER: &str = "meridian";

/// The database `start` creates, which [`Postgres::url`] names.
pub const DATABASE: &str = "meridian";

/// How the server is stopped (PostgreSQL's shutdown modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: aborts open transactions, checkpoints, exits.
    Fast,
    /// SIGQUIT: exits at once, as a crash would; the next start recovers
    /// from the WAL.
    Immediate,
}

/// One running server. Dropping it stops the server and removes its files.
pub struct Postgres {
    /// Holds `data/` (the cluster), `socket/` and `postgres.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    /// The user the server runs as (uid, gid), when this process is root.
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
    watchdog: Option<Child>,
}

/// Whether a server can be had here (installed, or installable as root);
/// says loudly why not when it cannot, so that `what` is seen skipped.
pub fn available(what: &str) -> bool {
    let installed = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres/install"))
        .arg("--check")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed || nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!(
        "\n################################################################\n\
         # {what} SKIPPED: PostgreSQL 15+ is not installed and\n\
         # installing it needs root: run tests/postgres/install as root.\n\
         ################################################################\n"
    );
    false
}

/// Installs PostgreSQL if needed (`tests/postgres/install`) and returns the
/// directory of its programs.
pub fn install() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres/install");
    let output = Command::new(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed with {}", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(PathBuf::from(
        stdout.lines().last().unwrap_or_default().trim(),
    ))
}

impl Postgres {
    /// Initialises a cluster in a new temporary directory, starts the
    /// server, waits until it accepts connections and creates the database
    /// [`DATABASE`].
    pub fn start() -> anyhow::Result<Self> {
        let started = Instant::now();
        let bin = install()?;
        let dir = tempfile::Builder::new()
            .prefix("meridian-pg-")
            .tempdir()
            .context("creating the server's directory")?;
        let run_as = unprivileged_user()?;
        let mut server = Postgres {
            bin,
            port: 0,
            password: format!("{:032x}", rand::random::<u128>()),
            run_as,
            server: None,
            watchdog: None,
            dir,
        };
        server.watchdog = Some(server.spawn_watchdog()?);
        server.init()?;
        // A free port can be taken between our probe and the server's bind;
        // then the server exits at once and another port is tried.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = free_port()?;
            match server.launch() {
                Ok(()) => break,
                Err(error) if attempts < 3 && server.log().contains("Address already in use") => {
                    eprintln!(
                        "postgres on port {} did not start ({error:#}); again",
                        server.port
                    );
                }
                Err(error) => return Err(error),
            }
        }
        server.psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        eprintln!(
            "postgres in {} ready in {:.2} s at 127.0.0.1:{}",
            server.dir.path().display(),
            started.elapsed().as_secs_f64(),
            server.port
        );
        Ok(server)
    }

    /// The URL of [`DATABASE`], with the password.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    /// The URL of database `name` on this server, with the password.
    pub fn url_of(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's (postmaster's) process id while it runs; its backends
    /// are its children, so a benchmark can measure what they spend.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Where the server writes its log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Creates an empty database `name` (a bare identifier) and returns
    /// its URL, so that tests sharing a server do not share data.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("database name {name:?}: use [a-z0-9_]+");
        }
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url_of(name))
    }

    /// Runs `sql` in `database` with `psql` and returns its unaligned,
    /// tuples-only output; fails with psql's error when a statement fails.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url_of(database))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        checked("psql", &output).with_context(|| format!("psql -c {sql:?}"))
    }

    /// Stops the server (see [`Stop`]) and starts it again on the same data
    /// directory and port; returns how long it took to accept connections
    /// again.
    pub fn restart_with(&mut self, mode: Stop) -> anyhow::Result<Duration> {
        let started = Instant::now();
        self.stop(mode)?;
        self.launch()?;
        Ok(started.elapsed())
    }

    /// Serves TLS from now on with this certificate and key (PEM), after a
    /// fast restart. Clients may still connect without TLS; a client that
    /// requires it gets it.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let data = self.data_dir();
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text)?;
        self.restart_with(Stop::Fast)?;
        Ok(())
    }

    /// Starts the server again after a [`stop`](Self::stop), on its data.
    pub fn relaunch(&mut self) -> anyhow::Result<()> {
        self.launch()
    }

    /// [`restart_with`](Self::restart_with) [`Stop::Immediate`]: the server
    /// goes down as in a crash, and recovers when it starts.
    pub fn restart(&mut self) -> anyhow::Result<Duration> {
        self.restart_with(Stop::Immediate)
    }

    /// Stops the server, waiting until it has exited; a stopped server can
    /// be started again with [`restart_with`](Self::restart_with).
    pub fn stop(&mut self, mode: Stop) -> anyhow::Result<()> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        let signal = match mode {
            Stop::Fast => Signal::SIGINT,
            Stop::Immediate => Signal::SIGQUIT,
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if child.try_wait().context("waiting for postgres")?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("postgres did not stop within {DEADLINE:?} of {signal}; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log, for failure reports.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// A command for one of the server's programs, as the unprivileged user
    /// when there is one.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too.
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Creates the directories (owned by the server's user) and runs
    /// `initdb` with the role [`USER`] and its password.
    fn init(&self) -> anyhow::Result<()> {
        // Others need to pass through the top directory to reach theirs.
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let password_file = self.dir.path().join("password");
        for path in [self.data_dir(), self.socket_dir()] {
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::write(&password_file, &self.password)?;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as {
            for path in [self.data_dir(), self.socket_dir(), password_file.clone()] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", path.display()))?;
            }
        }
        // --no-sync: the cluster is thrown away with the test; the server
        // itself keeps fsync on, so restarts test real recovery.
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "--auth=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .context("running initdb")?;
        checked("initdb", &output)?;
        std::fs::remove_file(&password_file)?;
        Ok(())
    }

    /// Starts `postgres` on the data directory and waits until it accepts
    /// connections, or fails with the end of its log.
    fn launch(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening postgres.log")?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(self.socket_dir())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        self.server = Some(child);
        let started = Instant::now();
        loop {
            let child = self.server.as_mut().expect("just started");
            if let Some(status) = child.try_wait()? {
                self.server = None;
                bail!("postgres exited with {status}:\n{}", tail(&self.log(), 20));
            }
            if self.accepts_connections()? {
                return Ok(());
            }
            if started.elapsed() > DEADLINE {
                let _ = self.stop(Stop::Immediate);
                bail!(
                    "postgres did not accept connections within {DEADLINE:?}:\n{}",
                    tail(&self.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether the server answers on its TCP port (`pg_isready`).
    fn accepts_connections(&self) -> anyhow::Result<bool> {
        let status = Command::new(self.bin.join("pg_isready"))
            .args([
                "-q",
                "-t",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", USER, "-d", "postgres"])
            .stdin(Stdio::null())
            .status()
            .context("running pg_isready")?;
        Ok(status.success())
    }

    /// A process that, once this one is gone, stops the server (whatever
    /// its pid after restarts: it reads `postmaster.pid`) and removes the
    /// directory. Dropping the harness kills it first.
    fn spawn_watchdog(&self) -> anyhow::Result<Child> {
        const SCRIPT: &str = r#"
            while kill -0 "$1" 2>/dev/null; do sleep 1; done
            pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null) && kill -QUIT "$pid" 2>/dev/null
            for _ in $(seq 100); do [ -e "$2/data/postmaster.pid" ] || break; sleep 0.1; done
            rm -rf "$2"
        "#;
        Command::new("sh")
            .args(["-c", SCRIPT, "postgres-watchdog"])
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the watchdog")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "postgres in {}: last log lines\n{}",
                self.dir.path().display(),
                tail(&self.log(), 20)
            );
        }
        if let Err(error) = self.stop(Stop::Immediate) {
            eprintln!("stopping postgres: {error:#}");
        }
    }
}

/// `nobody`'s uid and gid when this process is root (PostgreSQL refuses to
/// run as root), else `None`: the server runs as this process's user.
fn unprivileged_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("nobody")
        .context("looking up the user nobody")?
        .context("running postgres as root is refused, and there is no user nobody")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn checked(program: &str, output: &Output) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{program} failed with {}: {}{stdout}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
