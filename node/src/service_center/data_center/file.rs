//! The SQLite file: opened by one process at a time (see [`super::lock`]),
//! written by the [`Writer`] thread with group commit, and read on a small
//! pool of read-only connections that never block on the writer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::recipients::Recipients;
use super::writer::control;
use super::{SqliteTx, Tx, Writer, lock, schema};
use crate::Error;
use crate::telemetry::CommitMetrics;

/// Read connections kept open, each with SQLite's default page cache
/// (2 MiB).
const READERS: usize = 4;

/// The writer's page cache, in KiB: SQLite's default. Every commit walks
/// the pages the cache holds (SQLite's `pcache1TruncateUnsafe`, at the end
/// of each write transaction), so a larger cache makes every commit slower
/// once it has filled. Measured here with 64 MiB: a commit of one row took
/// 131 to 189 µs against 44 to 68 µs with 2 MiB; pages the cache misses
/// come from the kernel's page cache.
const WRITER_CACHE_KIB: i64 = 2048;

#[derive(Clone)]
pub struct SqliteFile {
    writer: Writer,
    /// Who messages go to, as the writer last read it.
    recipients: Recipients,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<Path>,
    /// Held while any handle lives (see [`lock`]).
    _lock: Arc<std::fs::File>,
}

impl SqliteFile {
    /// Opens (creating and migrating if needed) the database at `path`,
    /// first waiting for any other process that has it open to exit; the
    /// writer reports its group commits to `commits`. Blocks.
    pub fn open(path: &Path, commits: CommitMetrics) -> Result<Self, Error> {
        let lock = lock::acquire(path)?;
        // SQLite gives the -wal and -shm files the database file's mode.
        restrict(path)?;
        let mut conn = Connection::open(path)?;
        prepared_once(&conn)?;
        conn.execute_batch(
            // Savepoints' undo copies stay in memory (temp_store), and the
            // writer checkpoints the WAL between batches (see `checkpoint`).
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;
             PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0;
             PRAGMA journal_size_limit=67108864;",
        )?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn)?;
        restrict(path)?; // companions an earlier build left with another mode
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_reader(path)?);
        }
        let recipients = Recipients::default();
        let kept = recipients.clone();
        Ok(Self {
            writer: Writer::start_with(conn, commits, move || kept.forget()),
            recipients,
            readers: Arc::new(Mutex::new(readers)),
            path: path.into(),
            _lock: Arc::new(lock),
        })
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(self.on_writer(f)).await
    }

    /// [`Self::write`], then `after` on the writer thread (see
    /// [`Writer::write_then`]).
    pub async fn write_then<T, F, A>(&self, f: F, after: A) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
    {
        self.writer.write_then(self.on_writer(f), after).await
    }

    /// [`Self::write`] for a write nobody is kept waiting for (see
    /// [`Writer::write_lazily`]).
    pub async fn write_lazily<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write_lazily(self.on_writer(f)).await
    }

    /// `f` as a job of the writer: its transaction keeps the writer's
    /// [`Recipients`] up to date.
    fn on_writer<T, F>(&self, f: F) -> impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static
    where
        F: FnOnce(&mut dyn Tx) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let kept = self.recipients.clone();
        move |conn| f(&mut SqliteTx::of_writer(conn, &kept))
    }

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
            let result = control(&conn, "BEGIN DEFERRED")
                .map_err(Error::from)
                .and_then(|()| f(&mut SqliteTx::new(&conn)));
            let _ = control(&conn, "COMMIT");
            if !conn.is_autocommit() {
                let _ = control(&conn, "ROLLBACK");
            }
            // A connection still in its read transaction would hold its
            // snapshot (and the checkpoints) forever: it is not kept.
            let mut pool = readers.lock().expect("reader pool");
            if pool.len() < READERS && conn.is_autocommit() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("data center read: {e}")))?
    }

    /// A fresh read connection to the file, for tests of what it holds.
    #[cfg(test)]
    pub(crate) fn reader(&self) -> Result<Connection, Error> {
        open_reader(&self.path)
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
    prepared_once(&conn)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Statements kept prepared per connection: more than this data center's
/// distinct statements (about 45), so that none is parsed again because
/// others pushed it out of rusqlite's cache (16 by default).
const CACHED_STATEMENTS: usize = 128;

/// Makes `conn` prepare each statement once:
/// - it keeps [`CACHED_STATEMENTS`] prepared statements;
/// - SQLite's query planner stability guarantee is on: a statement's plan
///   does not depend on the values bound to it. Without it SQLite prepares
///   a cached statement again (parses and plans it) at every run in which a
///   value bound to it might change the plan: a `LIMIT ?`, or an equality
///   on a bound value beside an `ORDER BY`, as reading the outbox once per
///   batch carried and paging a group's messages do. Every statement here
///   is an index lookup whose plan no value changes.
fn prepared_once(conn: &Connection) -> Result<(), Error> {
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// A statement shaped like the outbox's read (an equality, a range, an
    /// `ORDER BY` and a `LIMIT`, all bound) runs with new values on the
    /// statement prepared the first time. Without [`prepared_once`] SQLite
    /// prepares it again at each of these runs.
    #[test]
    fn cached_statements_are_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dc.sqlite");
        let file = SqliteFile::open(&path, CommitMetrics::default()).unwrap();
        let sql = "SELECT id FROM outbox WHERE destination = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
        let writer_like = Connection::open(&path).unwrap();
        prepared_once(&writer_like).unwrap(); // as `SqliteFile::open` sets up the writer's
        for conn in [file.reader().unwrap(), writer_like] {
            for after in 0..4i64 {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let rows = stmt.query_map(rusqlite::params!["us", after, 2 + after], |r| {
                    r.get::<_, i64>(0)
                });
                assert_eq!(rows.unwrap().count(), 0);
            }
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        }
    }
}
