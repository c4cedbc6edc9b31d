//! Scenario `failover`: a region whose service center runs several replicas
//! on one PostgreSQL data center (docs/ARCHITECTURE.md §12, "Several
//! replicas"), a client sending open loop to a group homed there through one
//! replica, and that replica killed with SIGKILL again and again. The client
//! does what the CLI does (node/src/cli/servers.rs): on a broken call it
//! carries its session to the next replica (`Client::connect_as`) and
//! resends with the same idempotency key, so a send the dead replica
//! committed but never acknowledged is answered with the first message.
//!
//! Per kill: the time until the client is served again by another replica
//! (its first ack from one after the kill), the longest gap between acks
//! around the kill, and the sends that had to be retried. After each run the
//! group's history is read back: every acked id once, at its seq, and seqs
//! without gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_node::client::Client;
use tokio::time::Instant;

use super::ack::latency_row;
use super::open_loop::{self, Schedule};
use super::report::{Row, wall_micros};
use super::setup::{Ctx, body};

pub struct Params {
    pub region: String,
    /// Sends per second, open loop.
    pub rate: f64,
    /// Kills per run.
    pub kills: usize,
    /// Time between kills; each comes mid-way through its interval.
    pub interval: Duration,
    pub warmup: Duration,
    /// One attempt's limit: past it the client moves to another replica.
    pub attempt_timeout: Duration,
    /// A send still unacknowledged after this long is given up (and
    /// counted): it would be a failure of the failover itself.
    pub give_up: Duration,
    pub max_in_flight: usize,
    pub body_bytes: usize,
}

/// What one kill did to the client.
#[derive(Clone, Debug)]
pub struct Kill {
    /// Seconds since the load started.
    pub at: f64,
    pub replica: usize,
    pub pid: u32,
    /// From the kill to the first ack by another replica.
    pub served_again: Option<Duration>,
    pub served_by: Option<usize>,
    /// The longest time between two consecutive acks from just before the
    /// kill to half an interval after it.
    pub longest_gap: Duration,
    /// Sends whose first failure fell between this kill and the next.
    pub retried_sends: u64,
    pub failed_attempts: u64,
    /// Retried sends the new replica answered as a duplicate: the dead one
    /// had committed them.
    pub duplicates: u64,
    /// The longest send (intended start to ack) among those retried.
    pub worst_latency: Duration,
    /// From the kill until the killed replica, restarted by local mode,
    /// served this client again.
    pub back_after: Option<Duration>,
}

/// The group's history against the acks.
#[derive(Clone, Debug, Default)]
pub struct Check {
    pub acked: usize,
    pub history: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub seq_gaps: usize,
    pub seq_mismatches: usize,
    pub unacked_in_history: usize,
    pub given_up: u64,
}

impl Check {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.seq_gaps == 0 && self.seq_mismatches == 0
    }

    fn line(&self) -> String {
        format!(
            "{} acked, {} in history: lost {}, duplicated {}, seq gaps {}, seq mismatches {}, \
             in history but never acked {}, sends given up {}{}",
            self.acked,
            self.history,
            self.lost,
            self.duplicated,
            self.seq_gaps,
            self.seq_mismatches,
            self.unacked_in_history,
            self.given_up,
            if self.clean() {
                " (clean)"
            } else {
                " (NOT CLEAN)"
            }
        )
    }
}

/// One acknowledged send.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    id: String,
    seq: u64,
    done: Instant,
    replica: usize,
    duplicate: bool,
    first_failure: Option<Instant>,
    latency: Duration,
}

#[derive(Default)]
struct Log {
    acks: Vec<Ack>,
    /// When an attempt failed, at which replica, and why.
    failures: Vec<(Instant, usize, String)>,
    given_up: u64,
}

/// The replica the client is on, and moving on from it.
struct Router {
    urls: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    state: tokio::sync::Mutex<Current>,
}

struct Current {
    index: usize,
    client: Client,
    /// Bumped on every move, so that the calls that failed on one replica
    /// move the client once, not once each.
    generation: u64,
}

impl Router {
    async fn current(&self) -> (Client, usize, u64) {
        let state = self.state.lock().await;
        (state.client.clone(), state.index, state.generation)
    }

    async fn index(&self) -> usize {
        self.state.lock().await.index
    }

    /// Moves to the next replica that accepts a connection, after the one
    /// of `generation`, with the session; if none does, stays (the next
    /// failure tries again).
    async fn move_from(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation != generation {
            return;
        }
        let n = self.urls.len();
        for step in 1..=n {
            let i = (state.index + step) % n;
            let connect = state.client.connect_as(&self.urls[i], self.tls.clone());
            if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                state.client = client;
                state.index = i;
                state.generation += 1;
                return;
            }
        }
        drop(state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a failed call says the replica is gone rather than that the
/// request was refused (as the CLI's `is_broken`): `Unavailable`, or a
/// status the transport made (it has a source).
fn broken(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
}

/// The pid file local mode keeps for replica `i` (docs: operator/src/local).
fn pid_file(dir: &Path, i: usize) -> PathBuf {
    match i {
        0 => dir.join("service-center.pid"),
        i => dir.join(format!("service-center-{i}.pid")),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// Runs the scenario once: `kills` kills, then the history check.
pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<(Vec<Row>, Vec<Kill>, Check)> {
    let region = params.region.as_str();
    let urls = ctx.endpoints.clients(region)?.to_vec();
    if urls.len() < 2 {
        bail!(
            "region {region} has {} service-center replica(s); failover needs 2 or more",
            urls.len()
        );
    }
    let dir = ctx.endpoints.dir(region)?.to_path_buf();
    let duration = params.interval * params.kills as u32;
    println!(
        "\n-- failover: open loop at {} msg/s to a group homed at {region}, {} replicas, {} kills (one every {} s, after {} s of warm-up), attempts time out after {} ms",
        params.rate,
        urls.len(),
        params.kills,
        params.interval.as_secs_f64(),
        params.warmup.as_secs_f64(),
        params.attempt_timeout.as_millis()
    );

    let mut sender = ctx.user("fo-s", region, region).await?;
    let group = sender.create_group(ctx, "fo").await?;
    let tls = ctx.endpoints.tls()?;
    let router = Arc::new(Router {
        state: tokio::sync::Mutex::new(Current {
            index: 0,
            client: sender.client.clone(),
            generation: 0,
        }),
        urls: urls.clone(),
        tls: tls.clone(),
    });
    let log = Arc::new(Mutex::new(Log::default()));
    let schedule = Schedule {
        rate: params.rate,
        warmup: params.warmup,
        duration,
        max_in_flight: params.max_in_flight,
        timeout: params.give_up + Duration::from_secs(5),
    };

    let started = Instant::now();
    let driver = tokio::spawn(kill_driver(
        router.clone(),
        dir.clone(),
        group.clone(),
        started,
        params.warmup,
        params.interval,
        params.kills,
    ));
    let prefix = ctx.name("fo");
    let (attempt_timeout, give_up, bytes) =
        (params.attempt_timeout, params.give_up, params.body_bytes);
    let outcome = open_loop::run(&schedule, |slot| {
        let (router, log, group) = (router.clone(), log.clone(), group.clone());
        let key = format!("{prefix}-{}", slot.index);
        async move {
            let body = body(&key, bytes);
            let began = Instant::now();
            let mut first_failure = None;
            loop {
                let (mut client, replica, generation) = router.current().await;
                let result =
                    tokio::time::timeout(attempt_timeout, client.send(&group, &body, &key)).await;
                let now = Instant::now();
                let failure = match result {
                    Ok(Ok(reply)) => {
                        let latency = Duration::from_micros(
                            wall_micros().saturating_sub(slot.intended_wall_micros),
                        );
                        log.lock().expect("log").acks.push(Ack {
                            key,
                            id: reply.message_id,
                            seq: reply.seq,
                            done: now,
                            replica,
                            duplicate: reply.duplicate,
                            first_failure,
                            latency,
                        });
                        return Ok(());
                    }
                    Ok(Err(status)) => {
                        let what = format!("{:?}: {}", status.code(), status.message());
                        (what, broken(&status))
                    }
                    Err(_) => (format!("no reply within {attempt_timeout:?}"), true),
                };
                first_failure.get_or_insert(now);
                let (what, moves) = failure;
                log.lock()
                    .expect("log")
                    .failures
                    .push((now, replica, what.clone()));
                if now.duration_since(began) >= give_up {
                    log.lock().expect("log").given_up += 1;
                    return Err(format!("gave up: {what}"));
                }
                if moves {
                    router.move_from(generation).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    let kills = driver.await.context("the kill driver")??;

    // Read the history back through whichever replica serves now.
    let check = verify(&router, &group, &log).await?;

    let log = log.lock().expect("log");
    let mut acks = log.acks.clone();
    acks.sort_by_key(|a| a.done);
    let results: Vec<Kill> = kills
        .iter()
        .enumerate()
        .map(|(k, kill)| {
            let until = kills
                .get(k + 1)
                .map_or(Instant::now(), |next| next.at_instant);
            measure(
                kill,
                until,
                params.interval / 2,
                &acks,
                &log.failures,
                started,
            )
        })
        .collect();
    let mut rows = vec![latency_row(
        format!("send-ack through the failovers, {region}"),
        &outcome,
    )];
    let mut lines: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(k, r)| describe(k, r))
        .collect();
    lines.push(format!(
        "longest gap between acks in the whole run: {:.1} ms; the longest away from any kill (baseline): {:.1} ms",
        ms(longest_gap(&acks, None)),
        ms(longest_gap(&acks, Some((&kills, params.interval / 2))))
    ));
    rows.push(Row::Text {
        label: format!("kills of the replica in use, {region}"),
        lines,
    });
    rows.push(Row::Text {
        label: "history check".into(),
        lines: vec![check.line()],
    });
    for row in &rows {
        row.print();
    }
    Ok((rows, results, check))
}

/// One kill as the driver did it.
struct Done {
    at_instant: Instant,
    replica: usize,
    pid: u32,
    back_after: Option<Duration>,
}

/// Kills the replica the client is on, mid-way through each interval, once
/// the previously killed one serves again (so that there is somewhere to
/// go); records when that happened.
async fn kill_driver(
    router: Arc<Router>,
    dir: PathBuf,
    group: String,
    started: Instant,
    warmup: Duration,
    interval: Duration,
    kills: usize,
) -> anyhow::Result<Vec<Done>> {
    let mut done: Vec<Done> = Vec::new();
    // Watches the last victim come back, from the moment it was killed.
    let mut back: Option<tokio::task::JoinHandle<anyhow::Result<Instant>>> = None;
    for k in 0..=kills {
        let previous = match back.take() {
            Some(task) => Some(task.await.context("the restart watch")??),
            None => None,
        };
        if let (Some(at), Some(last)) = (previous, done.last_mut()) {
            last.back_after = Some(at.duration_since(last.at_instant));
        }
        if k == kills {
            // The last victim is back too: the history can be read and the
            // next run starts with every replica up.
            break;
        }
        tokio::time::sleep_until(started + warmup + interval * k as u32 + interval / 2).await;
        let replica = router.index().await;
        let file = pid_file(&dir, replica);
        let pid = read_pid(&file).with_context(|| format!("no pid in {}", file.display()))?;
        anyhow::ensure!(alive(pid), "replica {replica} (pid {pid}) is not running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )
        .with_context(|| format!("kill -9 {pid}"))?;
        let at_instant = Instant::now();
        println!(
            "  kill {}: kill -9 replica {replica} (pid {pid}) at {:.2} s",
            k + 1,
            at_instant.duration_since(started).as_secs_f64()
        );
        done.push(Done {
            at_instant,
            replica,
            pid,
            back_after: None,
        });
        let (router, dir, group) = (router.clone(), dir.clone(), group.clone());
        back = Some(tokio::spawn(async move {
            wait_serving(&router, &dir, replica, pid, &group, Duration::from_secs(60))
                .await
                .with_context(|| format!("replica {replica} did not come back"))
        }));
    }
    Ok(done)
}

/// Waits until replica `i` runs under a pid other than `killed` and serves
/// the client's session; returns when it did.
async fn wait_serving(
    router: &Router,
    dir: &Path,
    i: usize,
    killed: u32,
    group: &str,
    within: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let restarted = read_pid(&pid_file(dir, i)).is_some_and(|pid| pid != killed && alive(pid));
        if restarted {
            let (client, _, _) = router.current().await;
            if let Ok(Ok(mut there)) = tokio::time::timeout(
                Duration::from_secs(2),
                client.connect_as(&router.urls[i], router.tls.clone()),
            )
            .await
                && there.get_group(group).await.is_ok()
            {
                return Ok(Instant::now());
            }
        }
        if Instant::now() >= deadline {
            bail!("not serving within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn measure(
    kill: &Done,
    until: Instant,
    window: Duration,
    acks: &[Ack],
    failures: &[(Instant, usize, String)],
    started: Instant,
) -> Kill {
    let after = |t: Instant| t >= kill.at_instant && t < until;
    let first = acks
        .iter()
        .find(|a| a.done >= kill.at_instant && a.replica != kill.replica);
    let retried: Vec<&Ack> = acks
        .iter()
        .filter(|a| a.first_failure.is_some_and(after))
        .collect();
    Kill {
        at: kill.at_instant.duration_since(started).as_secs_f64(),
        replica: kill.replica,
        pid: kill.pid,
        served_again: first.map(|a| a.done.duration_since(kill.at_instant)),
        served_by: first.map(|a| a.replica),
        longest_gap: gap_around(acks, kill.at_instant, window),
        retried_sends: retried.len() as u64,
        failed_attempts: failures.iter().filter(|f| after(f.0)).count() as u64,
        duplicates: retried.iter().filter(|a| a.duplicate).count() as u64,
        worst_latency: retried.iter().map(|a| a.latency).max().unwrap_or_default(),
        back_after: kill.back_after,
    }
}

/// The longest time between consecutive acks from the last ack before `at`
/// to `window` after it.
fn gap_around(acks: &[Ack], at: Instant, window: Duration) -> Duration {
    let start = acks.iter().rposition(|a| a.done < at).unwrap_or(0);
    let end = at + window;
    acks[start..]
        .windows(2)
        .take_while(|w| w[0].done < end)
        .map(|w| w[1].done.duration_since(w[0].done))
        .max()
        .unwrap_or_default()
}

/// The longest time between consecutive acks; with `away`, only gaps that
/// end neither during a kill's window nor within a second before it.
fn longest_gap(acks: &[Ack], away: Option<(&[Done], Duration)>) -> Duration {
    acks.windows(2)
        .filter(|w| {
            away.is_none_or(|(kills, window)| {
                kills.iter().all(|k| {
                    let from = k
                        .at_instant
                        .checked_sub(Duration::from_secs(1))
                        .unwrap_or(k.at_instant);
                    w[1].done < from || w[0].done > k.at_instant + window
                })
            })
        })
        .map(|w| w[1].done.duration_since(w[0].done))
        .max()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn describe(k: usize, r: &Kill) -> String {
    let served = match (r.served_again, r.served_by) {
        (Some(d), Some(by)) => format!("served again by replica {by} after {:.1} ms", ms(d)),
        _ => "NOT served again by another replica".to_owned(),
    };
    let back = r.back_after.map_or("not back".to_owned(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    });
    format!(
        "kill {} at {:.2} s, replica {} (pid {}): {served}; longest gap between acks {:.1} ms; \
         {} sends retried ({} failed attempts, {} answered as duplicates), the slowest acked {:.1} ms \
         after its intended start; the killed replica was restarted and serving after {back}",
        k + 1,
        r.at,
        r.replica,
        r.pid,
        ms(r.longest_gap),
        r.retried_sends,
        r.failed_attempts,
        r.duplicates,
        ms(r.worst_latency),
    )
}

/// Reads the group's whole history and checks it against the acks.
async fn verify(router: &Router, group: &str, log: &Mutex<Log>) -> anyhow::Result<Check> {
    let (mut client, _, _) = router.current().await;
    let mut history = Vec::new();
    client
        .history_each(group, 0, u32::MAX, |d| history.push(d))
        .await
        .context("reading the group's history")?;
    let log = log.lock().expect("log");
    let mut check = Check {
        acked: log.acks.len(),
        history: history.len(),
        given_up: log.given_up,
        ..Check::default()
    };
    let mut at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    let mut previous = 0;
    for d in &history {
        // A page is in seq order: anything but the next seq is a gap (or
        // a repeat, which the ids below catch too).
        if d.seq != previous + 1 {
            check.seq_gaps += 1;
        }
        previous = d.seq;
        let key = d.body.split(' ').next().unwrap_or_default();
        if at.insert(d.message_id.as_str(), d.seq).is_some() || !keys.insert(key) {
            check.duplicated += 1;
        }
    }
    let mut acked_ids = BTreeSet::new();
    for ack in &log.acks {
        match at.get(ack.id.as_str()) {
            None => check.lost += 1,
            Some(seq) if *seq != ack.seq => check.seq_mismatches += 1,
            Some(_) => {}
        }
        if !acked_ids.insert(ack.id.as_str()) {
            check.duplicated += 1;
        }
        debug_assert!(!ack.key.is_empty());
    }
    check.unacked_in_history = history
        .iter()
        .filter(|d| !acked_ids.contains(d.message_id.as_str()))
        .count();
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(done: Instant, replica: usize) -> Ack {
        Ack {
            key: "k".into(),
            id: "i".into(),
            seq: 1,
            done,
            replica,
            duplicate: false,
            first_failure: None,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn the_gap_around_a_kill_spans_it() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let acks: Vec<Ack> = [0, 2, 4, 60, 62, 64, 200]
            .iter()
            .map(|&m| ack(t + ms(m), usize::from(m >= 60)))
            .collect();
        // Killed at 5 ms: from the ack at 4 to the one at 60.
        assert_eq!(gap_around(&acks, t + ms(5), ms(20)), ms(56));
        // The window ends before the 64 -> 200 gap starts.
        assert_eq!(gap_around(&acks, t + ms(5), ms(50)), ms(56));
        assert_eq!(gap_around(&acks, t + ms(5), ms(100)), ms(136));
        assert_eq!(longest_gap(&acks, None), ms(136));
        let kill = Done {
            at_instant: t + ms(5),
            replica: 0,
            pid: 1,
            back_after: None,
        };
        let failures = vec![(t + ms(6), 0, "x".to_owned())];
        let measured = measure(&kill, t + ms(300), ms(20), &acks, &failures, t);
        assert_eq!(measured.served_again, Some(ms(55)));
        assert_eq!(measured.served_by, Some(1));
        assert_eq!(measured.failed_attempts, 1);
    }

    #[test]
    fn a_broken_call_is_unavailable_or_made_by_the_transport() {
        assert!(broken(&tonic::Status::unavailable("gone")));
        assert!(!broken(&tonic::Status::not_found("no group")));
    }
}
