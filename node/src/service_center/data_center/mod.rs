//! The data center: the region's embedded database of user accounts, group
//! information and communication records (the message log), plus the
//! durable outbox for cross-region work.
//!
//! It is one SQLite file in WAL mode with `synchronous=FULL`: a write is
//! acknowledged only after its transaction is fsynced, and a crash at any
//! point leaves the last committed state. All writes go through one
//! [`Writer`] thread that commits many callers' jobs together; reads use a
//! small pool of separate connections and never block on the writer.
//!
//! The file and its `-wal` and `-shm` companions are readable and writable
//! by the service center's user only (mode 0600), whatever the umask.

pub mod accounts;
pub mod census;
mod checkpoint;
pub mod groups;
mod lock;
pub mod messages;
pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod schema;
pub mod sessions;
pub mod sqlite;
pub mod tx;
pub mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use sqlite::SqliteTx;
pub use tx::Tx;
pub use writer::Writer;

use crate::Error;
use crate::telemetry::CommitMetrics;

/// Read connections kept open.
const READERS: usize = 4;

#[derive(Clone)]
pub struct DataCenter {
    writer: Writer,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<Path>,
    /// What the writer reports of its group commits.
    commits: CommitMetrics,
    /// Held while any handle lives (see [`lock`]).
    _lock: Arc<std::fs::File>,
}

impl DataCenter {
    /// Opens (creating and migrating if needed) the database at `path`,
    /// first waiting for any other process that has it open to exit.
    /// Blocks: call it off the async threads.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let lock = lock::acquire(path)?;
        // SQLite gives the -wal and -shm files the database file's mode.
        restrict(path)?;
        let mut conn = Connection::open(path)?;
        conn.execute_batch(
            // Savepoints' undo copies stay in memory (temp_store), and the
            // writer checkpoints the WAL between batches (see [`checkpoint`]).
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;
             PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-65536;
             PRAGMA journal_size_limit=67108864;",
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        restrict(path)?; // companions an earlier build left with another mode
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_reader(path)?);
        }
        let commits = CommitMetrics::default();
        Ok(Self {
            writer: Writer::start(conn, commits.clone()),
            commits,
            readers: Arc::new(Mutex::new(readers)),
            path: path.into(),
            _lock: Arc::new(lock),
        })
    }

    /// The writer's group commits: latency and jobs per commit.
    pub fn commits(&self) -> &CommitMetrics {
        &self.commits
    }

    /// Runs `f` in a write transaction; returns once it is durable.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.writer
            .write(move |conn| f(&mut SqliteTx::new(conn)))
            .await
    }

    /// Runs `f` on a read connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("reader pool").pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&path)?,
            };
            let result = conn
                .execute_batch("BEGIN DEFERRED")
                .map_err(Error::from)
                .and_then(|()| f(&mut SqliteTx::new(&conn)));
            let _ = conn.execute_batch("COMMIT");
            let mut pool = readers.lock().expect("reader pool");
            if pool.len() < READERS {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("data center read: {e}")))?
    }

    /// Runs `f` on a fresh read connection to the SQLite file: for tests of
    /// what the file holds, which no flow may ask.
    #[cfg(test)]
    pub(crate) async fn read_sqlite<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&open_reader(&path)?))
            .await
            .map_err(|e| Error::Internal(format!("data center read: {e}")))?
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

/// Creates the database file if it is missing, and makes it and its
/// companions mode 0600.
fn restrict(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |file: &Path, e: std::io::Error| {
        Error::FailedPrecondition(format!("data center file {}: {e}", file.display()))
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|e| failed(file, e))?,
        }
    }
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
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
