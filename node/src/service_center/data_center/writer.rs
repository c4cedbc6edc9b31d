//! The single writer with group commit.
//!
//! One thread owns the database's write connection. Callers hand it jobs; it
//! takes every job that is waiting, runs each in its own savepoint inside one
//! transaction, commits once (one fsync for the whole batch), and only then
//! answers the callers. A job that fails rolls back its savepoint alone, so
//! it never leaves anything half-written and never spoils its neighbours.
//!
//! A job that nobody waits for ([`Writer::write_lazily`]) does not start a
//! commit of its own at once: it waits up to [`LAZY_WAIT`] for a job that
//! somebody waits for, and shares its commit (and its fsync).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::{self, Checkpointer};
use crate::Error;
use crate::telemetry::CommitMetrics;

/// Jobs committed together at most.
const MAX_GROUP: usize = 1024;

/// How long a job nobody waits for may wait for another job to share its
/// commit.
pub const LAZY_WAIT: Duration = Duration::from_millis(50);

/// What a job leaves to do once the batch's commit has succeeded or failed.
type Completion = Box<dyn FnOnce(Option<&Error>) + Send>;

trait Job: Send {
    /// Runs the job; `false` means it failed and its savepoint must roll back.
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Completion);
    /// Answers the caller without running (the transaction could not start).
    fn fail(self: Box<Self>, err: Error);
    /// Whether nobody waits for its commit, so it may wait for others.
    fn lazy(&self) -> bool;
}

/// What runs on a job's result once it is durable (see [`Writer::write_then`]).
type After<T> = Box<dyn FnOnce(&mut T) + Send>;

struct WriteJob<F, T> {
    f: F,
    reply: oneshot::Sender<Result<T, Error>>,
    lazy: bool,
    after: Option<After<T>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: FnOnce(&Connection) -> Result<T, Error> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Completion) {
        let WriteJob {
            f, reply, after, ..
        } = *self;
        let result = f(conn);
        let ok = result.is_ok();
        let completion = Box::new(move |commit_error: Option<&Error>| {
            let _ = reply.send(match commit_error {
                Some(err) => Err(err.clone()),
                None => result.map(|mut value| {
                    if let Some(after) = after {
                        after(&mut value);
                    }
                    value
                }),
            });
        });
        (ok, completion)
    }

    fn fail(self: Box<Self>, err: Error) {
        let _ = self.reply.send(Err(err));
    }

    fn lazy(&self) -> bool {
        self.lazy
    }
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`; it reports each group commit to
    /// `commits`.
    pub fn start(conn: Connection, commits: CommitMetrics) -> Self {
        Self::start_with(conn, commits, || {})
    }

    /// [`Writer::start`], and `undone` runs on the writer thread whenever
    /// writes that jobs made are undone: a job's savepoint rolled back, or
    /// a batch's commit failed. What was kept from those writes' reads
    /// (see [`super::recipients`]) must be forgotten then.
    pub fn start_with(
        conn: Connection,
        commits: CommitMetrics,
        undone: impl Fn() + Send + 'static,
    ) -> Self {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("data-center-writer".into())
            .spawn(move || run(conn, rx, commits, &undone))
            .expect("spawn the writer thread");
        Self { jobs }
    }

    /// Runs `f` in a transaction and returns its result once it is durable.
    /// When `f` fails, none of its writes are kept.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(f, false, None).await
    }

    /// [`Writer::write`], and `after` runs on the result once it is
    /// durable, before the caller has it: on this thread, in the order of
    /// the commits. So what `after` hands on (into a channel) keeps the
    /// order the writes took; it must be quick, as the writes behind it
    /// wait for it.
    pub async fn write_then<T, F, A>(&self, f: F, after: A) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
    {
        self.submit(f, false, Some(Box::new(after))).await
    }

    /// [`Writer::write`] for a write that nobody is kept waiting for: its
    /// commit may wait up to [`LAZY_WAIT`] for another write to share it,
    /// so that it costs no commit and no fsync of its own while others
    /// write (the outbox's clear of what a destination acknowledged).
    pub async fn write_lazily<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(f, true, None).await
    }

    async fn submit<T, F>(&self, f: F, lazy: bool, after: Option<After<T>>) -> Result<T, Error>
    where
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(WriteJob {
                f,
                reply,
                lazy,
                after,
            }))
            .map_err(|_| Error::Unavailable("the data center is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Internal("the data center writer stopped".into()))?
    }
}

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Job>>,
    commits: CommitMetrics,
    undone: &dyn Fn(),
) {
    let mut checkpointer = Checkpointer::new();
    loop {
        let first = match rx.recv_timeout(checkpoint::INTERVAL) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                checkpointer.idle(&conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        take_waiting(&rx, &mut batch);
        if batch.iter().all(|job| job.lazy()) {
            wait_for_company(&rx, &mut batch);
        }
        let (started, jobs) = (Instant::now(), batch.len());
        let settled = commit_batch(&conn, batch, undone);
        // Counted before anyone is answered, so a caller that reads the
        // metrics after its write sees the commit that made it durable.
        commits.observe(started.elapsed(), jobs);
        settled.answer();
        checkpointer.after_batch(&conn);
    }
}

/// Adds the jobs already waiting to `batch`, up to [`MAX_GROUP`].
fn take_waiting(rx: &mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    while batch.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A batch of lazy jobs waits, up to [`LAZY_WAIT`], for a job somebody
/// waits for, and takes it and those behind it into its commit.
fn wait_for_company(rx: &mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    let until = Instant::now() + LAZY_WAIT;
    while batch.len() < MAX_GROUP {
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(job) => {
                let awaited = !job.lazy();
                batch.push(job);
                if awaited {
                    take_waiting(rx, batch);
                    return;
                }
            }
            // The wait is over; or every handle is gone, and what is here
            // commits before the writer stops.
            Err(_) => return,
        }
    }
}

/// A batch's commit, done or failed, with its callers not yet answered.
struct Settled {
    commit_error: Option<Error>,
    completions: Vec<Completion>,
}

impl Settled {
    fn answer(self) {
        for complete in self.completions {
            complete(self.commit_error.as_ref());
        }
    }
}

fn commit_batch(conn: &Connection, batch: Vec<Box<dyn Job>>, undone: &dyn Fn()) -> Settled {
    // A transaction that an earlier batch's ROLLBACK could not end would
    // refuse every BEGIN from now on: end it first.
    if !conn.is_autocommit() {
        let _ = control(conn, "ROLLBACK");
    }
    if let Err(err) = control(conn, "BEGIN IMMEDIATE") {
        let err = Error::from(err);
        tracing::error!(%err, "data center transaction could not start");
        batch.into_iter().for_each(|job| job.fail(err.clone()));
        return Settled {
            commit_error: None,
            completions: Vec::new(),
        };
    }
    let mut completions = Vec::with_capacity(batch.len());
    // A savepoint that could not be released or rolled back, or one that
    // could not start because SQLite ended the transaction, leaves the
    // batch in doubt: then none of it is kept.
    let mut in_doubt = None;
    for job in batch {
        if let Some(err) = &in_doubt {
            job.fail(Error::clone(err));
            continue;
        }
        if let Err(err) = control(conn, "SAVEPOINT job") {
            let err = Error::from(err);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back: the jobs before
                // this one are undone, and no job after it may run outside
                // the batch's transaction.
                in_doubt = Some(err.clone());
            }
            job.fail(err);
            continue;
        }
        let (ok, completion) = job.run(conn);
        let settled = if ok {
            control(conn, "RELEASE job")
        } else {
            control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
        };
        if !ok {
            undone();
        }
        completions.push(completion);
        if let Err(err) = settled {
            in_doubt = Some(Error::from(err));
        }
    }
    let commit_error = match in_doubt {
        Some(err) => Some(err),
        None => control(conn, "COMMIT").err().map(Error::from),
    };
    if let Some(err) = &commit_error {
        // A failed COMMIT may leave the transaction open: none of it stays.
        if !conn.is_autocommit() {
            let _ = control(conn, "ROLLBACK");
        }
        undone();
        tracing::error!(%err, jobs = completions.len(), "data center commit failed");
    }
    Settled {
        commit_error,
        completions,
    }
}

/// Runs a transaction statement (`BEGIN`, `SAVEPOINT`, `COMMIT`, ...)
/// prepared once per connection, not parsed anew each time as
/// `execute_batch` would: the writer runs two per batch and two more per
/// job, a read two.
pub(super) fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY);")
            .unwrap();
        (dir, Writer::start(conn, CommitMetrics::default()), path)
    }

    fn count(path: &std::path::Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_failed_job_keeps_none_of_its_writes_and_spares_its_neighbours() {
        let (_dir, writer, path) = writer();
        let jobs = (0..50).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        conn.execute("INSERT INTO t VALUES (?1)", [i * 2])?;
                        if i % 5 == 0 {
                            conn.execute("INSERT INTO t VALUES (?1)", [i * 2 + 1])?;
                            return Err(Error::InvalidArgument(format!("job {i} refused")));
                        }
                        Ok(i)
                    })
                    .await
            })
        });
        let results = futures::future::join_all(jobs).await;
        let failed = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_err())
            .count();
        assert_eq!(failed, 10);
        assert_eq!(
            count(&path),
            40,
            "only the successful jobs' rows are stored"
        );
    }

    /// A job that ends the batch's transaction itself (here by a ROLLBACK)
    /// leaves its batch in doubt. Every caller is told the truth: a write
    /// answered with success is stored, one answered with an error is not.
    /// The writer goes on committing afterwards.
    #[tokio::test]
    async fn a_batch_in_doubt_answers_each_caller_with_what_was_kept() {
        let (_dir, writer, path) = writer();
        let rogue = |conn: &Connection| {
            conn.execute("INSERT INTO t VALUES (1000)", [])?;
            conn.execute_batch("ROLLBACK")?;
            Ok(1000)
        };
        let jobs = (0..20).map(|k| {
            let writer = writer.clone();
            tokio::spawn(async move {
                if k == 10 {
                    writer.write(rogue).await
                } else {
                    writer.write(insert(k)).await
                }
            })
        });
        let results = futures::future::join_all(jobs).await;
        let conn = Connection::open(&path).unwrap();
        let stored = |k: i64| -> bool {
            conn.query_row("SELECT count(*) FROM t WHERE k = ?1", [k], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
                == 1
        };
        for (k, result) in (0..20).zip(results) {
            let result = result.unwrap();
            if k == 10 {
                assert!(result.is_err(), "the rogue job is refused");
                assert!(!stored(1000));
            } else {
                assert_eq!(result.is_ok(), stored(k), "job {k}: {result:?}");
            }
        }
        assert_eq!(writer.write(insert(500)).await.unwrap(), 500);
        assert!(stored(500), "the writer commits after a batch in doubt");
    }

    /// A writer, and how many commits it has made.
    fn counted() -> (tempfile::TempDir, Writer, impl Fn() -> u64) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY);")
            .unwrap();
        let commits = CommitMetrics::default();
        let mut registry = prometheus_client::registry::Registry::default();
        crate::telemetry::ServiceCenterMetrics::new(commits.clone()).register(&mut registry);
        let count = move || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("commit_batch_jobs_count "))
                .map_or(0, |n| n.parse().unwrap())
        };
        (dir, Writer::start(conn, commits), count)
    }

    fn insert(k: i64) -> impl FnOnce(&Connection) -> Result<i64, Error> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [k])?;
            Ok(k)
        }
    }

    #[tokio::test]
    async fn a_lazy_write_shares_the_commit_of_the_next_write() {
        let (_dir, writer, commits) = counted();
        let (lazy, eager) = tokio::join!(writer.write_lazily(insert(1)), writer.write(insert(2)));
        assert_eq!((lazy.unwrap(), eager.unwrap()), (1, 2));
        assert_eq!(commits(), 1);
    }

    #[tokio::test]
    async fn a_lazy_write_alone_commits_after_its_wait() {
        let (dir, writer, commits) = counted();
        let started = std::time::Instant::now();
        assert_eq!(writer.write_lazily(insert(1)).await.unwrap(), 1);
        assert!(started.elapsed() >= LAZY_WAIT, "{:?}", started.elapsed());
        assert_eq!(commits(), 1);
        assert_eq!(count(&dir.path().join("db.sqlite")), 1);
    }

    /// `after` runs on the writer thread, so in the order of the commits,
    /// once the write is durable; not for a write that failed.
    #[tokio::test]
    async fn after_runs_on_the_writer_thread_once_the_write_is_durable() {
        let (dir, writer, _) = counted();
        let path = dir.path().join("db.sqlite");
        let (ran, seen) = std::sync::mpsc::channel();
        let after = |ran: std::sync::mpsc::Sender<_>, path: std::path::PathBuf| {
            move |k: &mut i64| {
                let thread = std::thread::current().name().map(str::to_owned);
                // Committed already: another connection sees it.
                let stored: i64 = Connection::open(&path)
                    .unwrap()
                    .query_row("SELECT count(*) FROM t WHERE k = ?1", [*k], |r| r.get(0))
                    .unwrap();
                ran.send((*k, thread, stored)).unwrap();
            }
        };
        for k in 0..3 {
            let done = writer.write_then(insert(k), after(ran.clone(), path.clone()));
            assert_eq!(done.await.unwrap(), k);
        }
        let refused = |_: &Connection| Err::<i64, _>(Error::Internal("refused".into()));
        let failed = writer.write_then(refused, after(ran.clone(), path.clone()));
        assert!(failed.await.is_err());
        drop(ran);
        let writer_thread = Some("data-center-writer".to_owned());
        let expected: Vec<_> = (0..3).map(|k| (k, writer_thread.clone(), 1)).collect();
        assert_eq!(seen.iter().collect::<Vec<_>>(), expected);
    }

    #[tokio::test]
    async fn results_come_back_after_the_commit() {
        let (_dir, writer, path) = writer();
        let n = writer
            .write(|conn| {
                conn.execute("INSERT INTO t VALUES (7)", [])?;
                Ok(7)
            })
            .await
            .unwrap();
        assert_eq!(n, 7);
        assert_eq!(
            count(&path),
            1,
            "visible to another connection once answered"
        );
    }
}
