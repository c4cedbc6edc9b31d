//! WAL checkpoints, between the writer's batches. Left to itself, SQLite
//! copies the WAL back into the database file (and fsyncs both) inside
//! whichever commit crosses the auto-checkpoint size, so every caller of
//! that batch waits for it. The writer instead checkpoints after it has
//! answered a batch's callers; the jobs that arrive meanwhile make the next
//! batch larger. No write runs during the checkpoint, so it can finish, and
//! the next write starts the WAL over instead of growing it.

use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Checkpoint at most this often.
const INTERVAL: Duration = Duration::from_millis(200);

pub struct Checkpointer {
    last: Instant,
}

impl Checkpointer {
    /// For a connection whose automatic checkpoints are off
    /// (`PRAGMA wal_autocheckpoint=0`).
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
        }
    }

    /// Runs a passive checkpoint if one is due. A failure is logged and
    /// retried next time: the WAL keeps every committed write meanwhile.
    pub fn after_batch(&mut self, conn: &Connection) {
        if self.last.elapsed() < INTERVAL {
            return;
        }
        self.last = Instant::now();
        if let Err(err) =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
        {
            tracing::warn!(%err, "WAL checkpoint failed; retrying later");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::Writer;

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_between_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let writer = Writer::start(conn);
        let write = |from: i64| {
            writer.write(move |conn| {
                for k in from..from + 500 {
                    conn.execute("INSERT INTO t VALUES (?1, zeroblob(200))", [k])?;
                }
                Ok(())
            })
        };
        write(0).await.unwrap();
        tokio::time::sleep(INTERVAL + Duration::from_millis(50)).await;
        write(500).await.unwrap();
        // The checkpoint runs after the second batch is answered.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&path).unwrap().len() <= before + 100_000 {
            assert!(
                Instant::now() < deadline,
                "no checkpoint copied the WAL into the database file"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
