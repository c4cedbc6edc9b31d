//! WAL checkpoints, between the writer's batches. Left to itself, SQLite
//! copies the WAL back into the database file (and fsyncs both) inside
//! whichever commit crosses the auto-checkpoint size, so every caller of
//! that batch waits for it. The writer instead checkpoints after it has
//! answered a batch's callers; the jobs that arrive meanwhile make the next
//! batch larger. No write runs during the checkpoint, so it can finish, and
//! the next write starts the WAL over instead of growing it. When writes
//! stop, the writer checkpoints what is left once it has been idle a while.

use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Checkpoint at most this often, and after this long without writes.
pub const INTERVAL: Duration = Duration::from_millis(200);

pub struct Checkpointer {
    last: Instant,
    /// Commits since the last checkpoint.
    pending: bool,
}

impl Checkpointer {
    /// For a connection whose automatic checkpoints are off
    /// (`PRAGMA wal_autocheckpoint=0`).
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            pending: false,
        }
    }

    /// After a committed batch: checkpoints if one is due.
    pub fn after_batch(&mut self, conn: &Connection) {
        self.pending = true;
        if self.last.elapsed() >= INTERVAL {
            self.checkpoint(conn);
        }
    }

    /// When no job came for [`INTERVAL`]: checkpoints what is left.
    pub fn idle(&mut self, conn: &Connection) {
        if self.pending {
            self.checkpoint(conn);
        }
    }

    /// A passive checkpoint. A failure is logged and retried next time: the
    /// WAL keeps every committed write meanwhile.
    fn checkpoint(&mut self, conn: &Connection) {
        self.last = Instant::now();
        self.pending = false;
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
    async fn committed_pages_reach_the_database_file_between_batches_and_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB);",
        )
        .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let writer = Writer::start(conn, crate::telemetry::CommitMetrics::default());
        let write = |from: i64| {
            writer.write(move |conn| {
                for k in from..from + 500 {
                    conn.execute("INSERT INTO t VALUES (?1, zeroblob(200))", [k])?;
                }
                Ok(())
            })
        };
        let grown = |at_least: u64| {
            let path = path.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::fs::metadata(&path).unwrap().len() < at_least {
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint copied the WAL into the database file"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // Right after the start no checkpoint is due; the idle one follows.
        write(0).await.unwrap();
        grown(before + 100_000).await;
        // A batch a while after the last checkpoint is checkpointed at once.
        tokio::time::sleep(INTERVAL * 2).await;
        write(500).await.unwrap();
        grown(before + 200_000).await;
    }
}
