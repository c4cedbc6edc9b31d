//! Scenario 7 (issue 4, §5): a randomized run of faults against a fixed seed.
//!
//! One three-region cluster of real processes (see `faults.rs`) runs every
//! schedule in turn. Schedule `i` is made from seed `base + i` alone (see
//! `meridian_tests::faults::schedule`) and printed before it runs: one to
//! three faults among cutting a link, isolating a region, `kill -9` and
//! restart of a service center or roaming system, and `SIGSTOP`/`SIGCONT` of
//! one, all within a few seconds, under light load (six senders, 60 msg/s in
//! all, to local and remote groups). When every fault is undone, the senders
//! stop, every acknowledged message must arrive, and the invariant checker
//! runs over everything recorded so far. The run stops at the first schedule
//! that leaves a violation.
//!
//! The same run goes on PostgreSQL (issue 11): each region's data center a
//! database on one real server, two service-center replicas per region,
//! clients failing over between them; the schedules add `kill -9` and
//! `SIGSTOP` of either replica and a crash of the PostgreSQL server.
//! `MERIDIAN_CHAOS_BACKEND=sqlite|postgres|both` (default both) picks.
//!
//! ```text
//! cargo build --workspace --bins
//! cargo test -p meridian-tests --test chaos -- --nocapture                 # 30 schedules
//! MERIDIAN_CHAOS_SCHEDULES=200 cargo test -p meridian-tests --test chaos -- --nocapture
//! MERIDIAN_CHAOS_SEED=4017 MERIDIAN_CHAOS_SCHEDULES=1 cargo test -p meridian-tests --test chaos -- --nocapture
//! ```
//!
//! `MERIDIAN_CHAOS_SEED` sets the base seed (default 4000); the last line
//! replays the one schedule of seed 4017 (the 18th of the default run).

use std::time::Duration;

use meridian_node::client::Client;
use meridian_tests::faults::checker::Report;
use meridian_tests::faults::cluster::{Backend, Cluster};
use meridian_tests::faults::schedule::{self, Schedule};
use meridian_tests::faults::workload::{Login, Workload};
use meridian_tests::in_process::PASSWORD;
use tokio::time::Instant;

const DEFAULT_SEED: u64 = 4000;
const DEFAULT_SCHEDULES: u64 = 30;
const REGIONS: [&str; 3] = ["a", "b", "c"];
/// Each of the six senders sends once per this: 60 msg/s in all.
const SEND_EVERY: Duration = Duration::from_millis(100);
/// Load goes on this long after the last fault of a schedule is undone.
const TAIL: Duration = Duration::from_millis(500);
/// Sends in progress must be acknowledged within this once every fault is
/// undone.
const ACK_WITHIN: Duration = Duration::from_secs(30);
/// Everything acknowledged must arrive within this once the senders stop.
const SETTLE: Duration = Duration::from_secs(60);
/// After the counts say everything arrived: a wait for late duplicates.
const GRACE: Duration = Duration::from_millis(300);

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// The users `<r>1@<r>` and groups `g<r>@<r>` of every region; every user is
/// a member of every group and keeps a stream open for all of them. Each
/// user's clients: one per service-center replica of its region.
async fn chat(cluster: &Cluster) -> (Workload, Vec<(String, Vec<Client>)>) {
    let mut clients = Vec::new();
    for code in REGIONS {
        let mut client = cluster.user(&format!("{code}1@{code}"), code).await;
        client
            .create_group(&format!("g{code}"))
            .await
            .unwrap_or_else(|e| panic!("create g{code}@{code}: {e}"));
        clients.push((code.to_owned(), client));
    }
    let groups: Vec<String> = REGIONS.iter().map(|r| format!("g{r}@{r}")).collect();
    for (code, client) in &mut clients {
        for group in groups.iter().filter(|g| !g.ends_with(&format!("@{code}"))) {
            client
                .join(group)
                .await
                .unwrap_or_else(|e| panic!("{code}1 joins {group}: {e}"));
        }
    }
    let mut workload = Workload::new();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut replicated = Vec::new();
    for (code, client) in clients {
        let clients = cluster.replicas_of(&code, &client).await;
        workload.subscribe_any(&format!("{code}1"), &clients, &groups, Some(&login(&code)));
        replicated.push((code, clients));
    }
    (workload, replicated)
}

/// How `<code>1@<code>` logs in again when a session expires during a
/// long run (sessions last 15 minutes).
fn login(code: &str) -> Login {
    Login {
        user: format!("{code}1@{code}"),
        password: PASSWORD.to_owned(),
    }
}

/// Every region's user sends to its own group and to the next region's.
fn load(workload: &mut Workload, clients: &[(String, Vec<Client>)], schedule: u64) {
    for (i, (code, client)) in clients.iter().enumerate() {
        let next = &clients[(i + 1) % clients.len()].0;
        workload.send_any(
            &format!("{code}1.{schedule}"),
            client,
            &format!("g{next}@{next}"),
            SEND_EVERY,
            Some(&login(code)),
        );
        workload.send_any(
            &format!("{code}1.{schedule}.local"),
            client,
            &format!("g{code}@{code}"),
            SEND_EVERY,
            Some(&login(code)),
        );
    }
}

/// Waits until every acknowledged message reached its three member sessions
/// (by count; at most [`SETTLE`]), then checks the invariants.
async fn settle(workload: &Workload) -> Report {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (acks, deliveries) = workload.recorder.counts();
        if deliveries >= acks * REGIONS.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(GRACE).await;
    workload.recorder.check()
}

/// Whether `MERIDIAN_CHAOS_BACKEND` asks for a run on `backend`.
fn wanted(backend: &str) -> bool {
    match std::env::var("MERIDIAN_CHAOS_BACKEND").as_deref() {
        Err(_) | Ok("both") => true,
        Ok(only) => only == backend,
    }
}

/// Scenario 7: at least 30 random fault schedules (200 on demand) on one
/// cluster; nothing acknowledged is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_fault_schedules_lose_nothing() {
    if wanted("sqlite") {
        run(Backend::Sqlite).await;
    }
}

/// The same on PostgreSQL, with two service-center replicas per region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_fault_schedules_lose_nothing_on_postgres_with_two_replicas() {
    if wanted("postgres") {
        run(Backend::Postgres).await;
    }
}

async fn run(backend: Backend) {
    let base = env_u64("MERIDIAN_CHAOS_SEED").unwrap_or(DEFAULT_SEED);
    let count = env_u64("MERIDIAN_CHAOS_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    eprintln!(
        "chaos ({backend:?}): {count} schedules, seeds {base}..{}; replay schedule i alone with \
         MERIDIAN_CHAOS_SEED=<its seed> MERIDIAN_CHAOS_SCHEDULES=1",
        base.wrapping_add(count)
    );
    let started = Instant::now();
    let cluster = Cluster::start_on(&REGIONS, backend).await;
    let (mut workload, clients) = chat(&cluster).await;
    let ready = started.elapsed();

    let codes = cluster.codes();
    let mut kinds = [0usize; 5];
    let mut acknowledged = 0;
    let mut ran = 0;
    let mut report = Report::default();
    let mut failure = None;
    for i in 0..count {
        let seed = base.wrapping_add(i);
        let plan = if cluster.replicated() {
            Schedule::random_replicated(seed, &codes)
        } else {
            Schedule::random(seed, &codes)
        };
        eprintln!("chaos: schedule {i} (seed {seed}): {plan}");
        let began = Instant::now();
        workload.resume_sending();
        load(&mut workload, &clients, i);
        schedule::run(&cluster, &plan).await;
        tokio::time::sleep(TAIL).await;
        let acked = workload.stop_sending(ACK_WITHIN).await;
        report = settle(&workload).await;
        ran += 1;
        for (total, n) in kinds.iter_mut().zip(plan.kinds()) {
            *total += n;
        }
        eprintln!(
            "chaos: schedule {i} (seed {seed}) done in {:.1} s: {} more acknowledged; {}",
            began.elapsed().as_secs_f64(),
            report.acknowledged - acknowledged,
            if report.is_clean() {
                "clean".to_owned()
            } else {
                report.to_string()
            }
        );
        acknowledged = report.acknowledged;
        let exited = cluster.exited();
        if !exited.is_empty() {
            failure = Some(format!(
                "schedule {i} (seed {seed}): a process exited by itself: {}",
                exited.join("; ")
            ));
        } else if !acked {
            failure = Some(format!(
                "schedule {i} (seed {seed}): sends were not acknowledged within {ACK_WITHIN:?} \
                 after its faults were undone"
            ));
        } else if !report.is_clean() {
            failure = Some(format!("schedule {i} (seed {seed}) left a violation"));
        }
        if failure.is_some() {
            break;
        }
    }
    workload.finish(Duration::from_secs(5)).await;

    let took = started.elapsed();
    eprintln!(
        "chaos report ({backend:?}): base seed {base}, schedules {ran} of {count} ({} cuts, {} \
         isolations, {} kill -9 and restart, {} SIGSTOP and SIGCONT, {} PostgreSQL crashes); \
         messages acknowledged {}, delivered {} \
         (to 3 member sessions each), lost {}, duplicated {}, order violations {} (gaps {}, \
         conflicts {}, redelivered {}); {:.1} s in all ({:.1} s to start the cluster, {:.1} s \
         per schedule)",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        kinds[4],
        report.acknowledged,
        report.delivered,
        report.lost,
        report.duplicated,
        report.out_of_order,
        report.gaps,
        report.conflicts,
        report.redelivered,
        took.as_secs_f64(),
        ready.as_secs_f64(),
        (took - ready).as_secs_f64() / ran.max(1) as f64,
    );
    if let Some(failure) = failure {
        panic!("{failure}: {report}");
    }
    assert_eq!(ran, count);
    assert!(report.acknowledged > 0, "nothing was acknowledged");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.out_of_order, 0, "{report}");
    assert!(report.is_clean(), "{report}");
}
