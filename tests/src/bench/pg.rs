//! What the benchmark reads from its PostgreSQL server: WAL and transaction
//! counters (`pg_stat_wal`, `pg_stat_database`), what the database's
//! backends are doing or waiting on (`pg_stat_activity`, sampled), and the
//! statements one send runs, from the server's log with `log_statement =
//! 'all'` switched on for a moment. Where a send's time goes on PostgreSQL (docs/ARCHITECTURE.md
//! §12: one transaction per closure, the server batching concurrent
//! commits' WAL flushes).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use meridian_tests::postgres::Postgres;

use super::cpu::{Watch, Watching};

/// Cumulative counters of the server (WAL) and of one database.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub wal_records: u64,
    pub wal_bytes: u64,
    /// WAL writes and fsyncs (`wal_sync_method` fdatasync, the default on
    /// Linux), by every process of the server.
    pub wal_writes: u64,
    pub wal_syncs: u64,
    pub commits: u64,
    pub rollbacks: u64,
}

/// Backends publish their counters at most once a second while busy and
/// shortly after going idle; wait this long after the load before reading.
pub const SETTLE: Duration = Duration::from_millis(2500);

impl Counters {
    pub fn read(server: &Postgres, database: &str) -> anyhow::Result<Self> {
        let out = blocking(|| {
            server.psql(
                "postgres",
                &format!(
                    "SELECT w.wal_records, w.wal_bytes, w.wal_write, w.wal_sync, \
                     d.xact_commit, d.xact_rollback FROM pg_stat_wal w, pg_stat_database d \
                     WHERE d.datname = '{database}'"
                ),
            )
        })?;
        let values: Vec<u64> = out
            .trim()
            .split('|')
            .map(|v| v.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("pg_stat_wal/pg_stat_database said {out:?}"))?;
        let [
            wal_records,
            wal_bytes,
            wal_writes,
            wal_syncs,
            commits,
            rollbacks,
        ] = values[..]
        else {
            anyhow::bail!("pg_stat_wal/pg_stat_database said {out:?}");
        };
        Ok(Self {
            wal_records,
            wal_bytes,
            wal_writes,
            wal_syncs,
            commits,
            rollbacks,
        })
    }

    /// The counters' growth from `before` to `self`, per send, for `sends`
    /// sends made in between.
    pub fn lines_since(&self, before: &Counters, sends: u64) -> Vec<String> {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let per = |n: u64| n as f64 / sends.max(1) as f64;
        let syncs = d(self.wal_syncs, before.wal_syncs);
        let commits = d(self.commits, before.commits);
        vec![
            format!("over {sends} acked sends (warm-up and measured window):"),
            format!(
                "transactions committed {commits} ({:.2} per send), rolled back {}",
                per(commits),
                d(self.rollbacks, before.rollbacks)
            ),
            format!(
                "WAL fsyncs {syncs} ({:.2} per send, {:.1} sends per fsync), WAL writes {}",
                per(syncs),
                sends as f64 / syncs.max(1) as f64,
                d(self.wal_writes, before.wal_writes)
            ),
            format!(
                "WAL records {:.1} per send, {:.0} bytes per send",
                per(d(self.wal_records, before.wal_records)),
                per(d(self.wal_bytes, before.wal_bytes))
            ),
        ]
    }
}

/// Samples `pg_stat_activity` every [`WAITS_EVERY`] over a window: how
/// many of the database's client backends run a statement, wait (and on
/// what: a lock, the WAL flush, …), or sit idle in a transaction, waiting
/// for the service center's next statement.
pub struct Waits {
    /// The database's URL (the sampler connects as the tests' user).
    pub url: String,
}

/// The sampling period of [`Waits`].
pub const WAITS_EVERY: Duration = Duration::from_millis(20);

struct Sampling {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<(u64, BTreeMap<String, u64>)>>,
}

impl Watch for Waits {
    fn start(&self) -> Box<dyn Watching> {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, flag) = (self.url.clone(), stop.clone());
        let thread = std::thread::spawn(move || sample_waits(&url, &flag));
        Box::new(Sampling { stop, thread })
    }
}

impl Watching for Sampling {
    fn finish(self: Box<Self>) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(Ok((samples, states))) => describe_waits(samples, &states),
            Ok(Err(e)) => vec![format!("pg_stat_activity not sampled: {e:#}")],
            Err(_) => vec!["pg_stat_activity sampler panicked".into()],
        }
    }
}

fn sample_waits(url: &str, stop: &AtomicBool) -> anyhow::Result<(u64, BTreeMap<String, u64>)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let query = client.prepare(
        "SELECT state, coalesce(wait_event_type, ''), coalesce(wait_event, '')          FROM pg_stat_activity WHERE datname = current_database()          AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )?;
    let (mut samples, mut states) = (0, BTreeMap::new());
    while !stop.load(Ordering::Relaxed) {
        for row in client.query(&query, &[])? {
            let state: Option<String> = row.get(0);
            let kind: String = row.get(1);
            let event: String = row.get(2);
            *states
                .entry(state_label(state.as_deref().unwrap_or(""), &kind, &event))
                .or_default() += 1;
        }
        samples += 1;
        std::thread::sleep(WAITS_EVERY);
    }
    Ok((samples, states))
}

fn state_label(state: &str, kind: &str, event: &str) -> String {
    match (state, kind) {
        ("active", "") => "running a statement (on CPU or runnable)".into(),
        ("active", _) => format!("waiting on {kind}:{event}"),
        ("idle in transaction", _) => {
            "idle in transaction (waiting for the service center's next statement)".into()
        }
        ("idle", _) => "idle between transactions".into(),
        (other, "") => other.to_owned(),
        (other, _) => format!("{other}, {kind}:{event}"),
    }
}

fn describe_waits(samples: u64, states: &BTreeMap<String, u64>) -> Vec<String> {
    let mut sorted: Vec<(&String, &u64)> = states.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1));
    let mut lines = vec![format!(
        "the database's client backends, {samples} samples of pg_stat_activity every {} ms; \
         backends on average in each state:",
        WAITS_EVERY.as_millis()
    )];
    for (state, count) in sorted {
        lines.push(format!(
            "  {:>5.2}  {state}",
            *count as f64 / samples.max(1) as f64
        ));
    }
    lines
}

/// One statement the server logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub pid: u32,
    /// The statement's first line, whitespace collapsed.
    pub text: String,
}

/// Runs `sends` with `log_statement = 'all'` and returns what the server
/// logged in between (every backend: a replica's background work at that
/// moment shows too, so the caller prints them all).
pub async fn statements_during<F, Fut>(server: &Postgres, sends: F) -> anyhow::Result<Vec<Logged>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    const BEGIN: &str = "meridian-bench-statements-begin";
    const END: &str = "meridian-bench-statements-end";
    let offset = std::fs::metadata(server.log_path()).map_or(0, |m| m.len());
    set_log_statement(server, Some("all"))?;
    // pg_reload_conf only signals: each backend rereads the setting before
    // its next command, which a marker statement then shows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(|| server.psql("postgres", &format!("SELECT '{BEGIN}'")))?;
    let ran = sends().await;
    blocking(|| server.psql("postgres", &format!("SELECT '{END}'")))?;
    set_log_statement(server, None)?;
    ran?;
    let mut log = String::new();
    let mut file = std::fs::File::open(server.log_path())?;
    file.seek(SeekFrom::Start(offset))?;
    file.read_to_string(&mut log)?;
    let statements = parse_log(&log);
    let begin = statements
        .iter()
        .position(|s| s.text.contains(BEGIN))
        .context("the begin marker is not in the server's log")?;
    let end = statements
        .iter()
        .position(|s| s.text.contains(END))
        .context("the end marker is not in the server's log")?;
    Ok(statements[begin + 1..end].to_vec())
}

/// Statements grouped by text with their counts, most frequent first.
pub fn tally(statements: &[Logged]) -> Vec<(usize, String)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statements {
        *counts.entry(&s.text).or_default() += 1;
    }
    let mut tally: Vec<(usize, String)> = counts
        .into_iter()
        .map(|(text, n)| (n, text.to_owned()))
        .collect();
    tally.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    tally
}

fn set_log_statement(server: &Postgres, value: Option<&str>) -> anyhow::Result<()> {
    let set = match value {
        Some(v) => format!("ALTER SYSTEM SET log_statement = '{v}'"),
        None => "ALTER SYSTEM RESET log_statement".to_owned(),
    };
    // ALTER SYSTEM refuses to run in a transaction block: two calls.
    blocking(|| server.psql("postgres", &set))?;
    blocking(|| server.psql("postgres", "SELECT pg_reload_conf()"))?;
    Ok(())
}

/// The statements of PostgreSQL's default log format: lines
/// `<time> <zone> [<pid>] LOG:  statement: <sql>` (simple protocol) and
/// `... LOG:  execute <name>: <sql>` (extended protocol).
fn parse_log(log: &str) -> Vec<Logged> {
    log.lines()
        .filter_map(|line| {
            let open = line.find(" [")?;
            let close = open + line[open..].find("] ")?;
            let pid = line[open + 2..close].parse().ok()?;
            let rest = line[close + 2..].strip_prefix("LOG:  ")?;
            let sql = match rest.strip_prefix("statement: ") {
                Some(sql) => sql,
                None => rest.strip_prefix("execute ")?.split_once(": ")?.1,
            };
            Some(Logged {
                pid,
                text: sql.split_whitespace().collect::<Vec<_>>().join(" "),
            })
        })
        .collect()
}

/// Runs a blocking call (psql) without stalling the async threads' other
/// tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_protocols_statements_are_read_from_the_log() {
        let log = "\
2026-11-30 10:00:00.001 UTC [41] LOG:  statement: SELECT 'meridian-bench-statements-begin'
2026-11-30 10:00:00.002 UTC [42] LOG:  statement: START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE
2026-11-30 10:00:00.003 UTC [42] LOG:  execute <unnamed>: SELECT last_seq FROM groups
\t    WHERE id = $1 FOR UPDATE
2026-11-30 10:00:00.003 UTC [42] DETAIL:  parameters: $1 = 'g@eu'
2026-11-30 10:00:00.004 UTC [42] LOG:  execute s0: INSERT   INTO messages VALUES ($1)
2026-11-30 10:00:00.005 UTC [42] LOG:  statement: COMMIT
2026-11-30 10:00:00.006 UTC [43] LOG:  checkpoint starting: time
";
        let parsed = parse_log(log);
        let texts: Vec<&str> = parsed.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "SELECT 'meridian-bench-statements-begin'",
                "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
                "SELECT last_seq FROM groups",
                "INSERT INTO messages VALUES ($1)",
                "COMMIT",
            ]
        );
        assert_eq!(parsed[1].pid, 42);
        let tally = tally(&parsed[1..]);
        assert_eq!(tally.len(), 4);
        assert!(tally.iter().all(|(n, _)| *n == 1));
    }

    #[test]
    fn backend_states_are_named_and_averaged() {
        assert_eq!(
            state_label("active", "Lock", "object"),
            "waiting on Lock:object"
        );
        assert!(state_label("active", "", "").starts_with("running"));
        assert!(state_label("idle in transaction", "Client", "ClientRead").starts_with("idle in"));
        let states = BTreeMap::from([("a".to_owned(), 10), ("b".to_owned(), 30)]);
        let lines = describe_waits(10, &states);
        assert_eq!(lines[1], "   3.00  b");
        assert_eq!(lines[2], "   1.00  a");
    }

    #[test]
    fn per_send_figures_divide_the_growth() {
        let before = Counters {
            wal_syncs: 10,
            commits: 100,
            ..Counters::default()
        };
        let after = Counters {
            wal_syncs: 60,
            commits: 300,
            ..Counters::default()
        };
        let lines = after.lines_since(&before, 100);
        assert!(lines[1].contains("200 (2.00 per send)"), "{lines:?}");
        assert!(
            lines[2].contains("50 (0.50 per send, 2.0 sends per fsync)"),
            "{lines:?}"
        );
    }
}
