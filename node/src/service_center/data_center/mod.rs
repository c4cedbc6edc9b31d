//! The data center: the region's embedded database of user accounts, group
//! information and communication records (the message log), plus the
//! durable outbox for cross-region work.
//!
//! It has two backends behind one interface, [`Tx`] (docs/ARCHITECTURE.md
//! §12). By default it is one SQLite file ([`file`]) in WAL mode with
//! `synchronous=FULL`: a write is acknowledged only after its transaction is
//! fsynced, and a crash at any point leaves the last committed state. The
//! file and its `-wal` and `-shm` companions are readable and writable by
//! the service center's user only (mode 0600), whatever the umask. A region
//! that needs several service-center replicas keeps it on PostgreSQL
//! ([`postgres`]) instead, shared by them all.

pub mod accounts;
pub mod census;
mod checkpoint;
pub mod file;
pub mod groups;
mod lock;
pub mod messages;
pub mod outbox;
pub mod postgres;
pub mod recipients;
pub mod retention;
pub mod runs;
pub mod schema;
pub mod sessions;
pub mod sqlite;
pub mod transfer;
pub mod tx;
pub mod writer;

use std::path::Path;
use std::time::Instant;

use tokio::sync::mpsc;

pub use file::SqliteFile;
pub use sqlite::SqliteTx;
pub use tx::Tx;
pub use writer::Writer;

use crate::Error;
use crate::telemetry::CommitMetrics;

/// The data center of one service center: cheap to clone.
#[derive(Clone)]
pub struct DataCenter {
    backend: Backend,
    /// Commits: latency, and jobs per commit.
    commits: CommitMetrics,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteFile),
    /// Boxed: its connection settings are large, and handles are cloned.
    Postgres(Box<postgres::Pool>),
}

impl DataCenter {
    /// Opens (creating and migrating if needed) the SQLite file at `path`,
    /// first waiting for any other process that has it open to exit.
    /// Blocks: call it off the async threads.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let commits = CommitMetrics::default();
        Ok(Self {
            backend: Backend::Sqlite(SqliteFile::open(path, commits.clone())?),
            commits,
        })
    }

    /// Connects to the PostgreSQL `settings` name and brings its schema up
    /// to date (safe while other replicas do too). Blocks.
    pub fn connect(settings: &postgres::Settings) -> Result<Self, Error> {
        let pool = postgres::Pool::open(postgres::Connector::new(settings)?)?;
        Ok(Self {
            backend: Backend::Postgres(Box::new(pool)),
            commits: CommitMetrics::default(),
        })
    }

    /// Whether several service-center replicas may share it (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The writer's group commits: latency and jobs per commit.
    pub fn commits(&self) -> &CommitMetrics {
        &self.commits
    }

    /// What this replica hears from the others sharing the data center;
    /// `None` when it has none (SQLite). Each call listens anew.
    pub fn listen(&self) -> Option<mpsc::Receiver<postgres::listen::Heard>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pool) => Some(postgres::listen::start(pool.connector().clone())),
        }
    }

    /// Runs `f` in a write transaction; returns once it is durable. When
    /// `f` fails, none of its writes are kept.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.write(f).await,
            Backend::Postgres(pool) => {
                let started = Instant::now();
                let written = pool.run(true, move |tx| f(tx)).await;
                self.commits.observe(started.elapsed(), 1);
                written
            }
        }
    }

    /// A write whose `after` runs on its result once it is durable, before
    /// the write returns: `dc.after_commit(after).write(f)`. On SQLite
    /// `after` runs on the writer thread, in the order of the commits, so
    /// what it hands on (into a channel) keeps the order the writes took;
    /// it must be quick. On PostgreSQL, where concurrent writes have no one
    /// order, it runs in the caller's task.
    pub fn after_commit<T, A>(&self, after: A) -> AfterCommit<'_, A>
    where
        A: FnOnce(&mut T) + Send + 'static,
    {
        AfterCommit { dc: self, after }
    }

    /// [`Self::write`] for a write that nobody is kept waiting for, such as
    /// the outbox's clear of what a destination acknowledged: on SQLite it
    /// may wait up to [`writer::LAZY_WAIT`] to share the commit (and the
    /// fsync) of another write. On PostgreSQL, which commits each write on
    /// its own and groups the flushes of concurrent commits itself, it is
    /// [`Self::write`].
    pub async fn write_lazily<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.write_lazily(f).await,
            Backend::Postgres(_) => self.write(f).await,
        }
    }

    /// Runs `f` in a read-only transaction, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(file) => file.read(f).await,
            Backend::Postgres(pool) => pool.run(false, move |tx| f(tx)).await,
        }
    }

    /// Runs `f` on a fresh read connection to the SQLite file: for tests of
    /// what the file holds, which no flow may ask.
    #[cfg(test)]
    pub(crate) async fn read_sqlite<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let Backend::Sqlite(file) = &self.backend else {
            panic!("read_sqlite on a PostgreSQL data center");
        };
        let file = file.clone();
        tokio::task::spawn_blocking(move || f(&file.reader()?))
            .await
            .map_err(|e| Error::Internal(format!("data center read: {e}")))?
    }
}

/// A write to come, with what runs on its result once it is durable (see
/// [`DataCenter::after_commit`]).
pub struct AfterCommit<'a, A> {
    dc: &'a DataCenter,
    after: A,
}

impl<A> AfterCommit<'_, A> {
    /// Runs `f` as [`DataCenter::write`] does, then `after` on its result.
    pub async fn write<T, F>(self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
    {
        match &self.dc.backend {
            Backend::Sqlite(file) => file.write_then(f, self.after).await,
            Backend::Postgres(_) => {
                let mut value = self.dc.write(f).await?;
                (self.after)(&mut value);
                Ok(value)
            }
        }
    }
}

/// Creates the data directory (and any missing parents) if needed, and
/// makes it mode 0700 whatever the umask or its earlier mode.
///
/// A directory this process does not own cannot be made 0700: a volume from
/// a provisioner that ignores `fsGroup` (local-path, hostPath) is owned by
/// root and made writable for everyone. It is used as it is, with a warning;
/// the files the data center keeps in it are 0600 all the same.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let meta = std::fs::metadata(dir)?;
            tracing::warn!(
                dir = %dir.display(),
                owner = meta.uid(),
                mode = format!("{:o}", meta.mode() & 0o7777),
                "the data directory is not this process's own, so it stays as it is; \
                 the data center's files in it are 0600"
            );
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_data_directory_is_private_even_when_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("regions/eu");
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }

    #[tokio::test]
    async fn the_database_and_its_companions_are_private_to_the_service_center() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-center.sqlite");
        // An earlier build left the file readable by everyone.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let dc = DataCenter::open(&path).unwrap();
        dc.write(|tx| {
            tx.insert_user("ann@eu", "h", 1)?;
            Ok(())
        })
        .await
        .unwrap();
        for suffix in ["sqlite", "sqlite-wal", "sqlite-shm", "lock"] {
            let file = dir.path().join(format!("data-center.{suffix}"));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}
