//! `fault-bench`: the numbers of issue 4 §6, measured on the fault-injection
//! harness (`meridian_tests::faults`): every region's service center and
//! roaming system are real `meridian-node` processes, each region on its own
//! host (a network namespace; loopback when namespaces cannot be made), and
//! links are cut by taking their veth down. It is a measurement: it prints
//! numbers and the invariant checker's verdict, and asserts nothing about
//! speed.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/fault-bench                      # all three parts
//! target/release/fault-bench --part catchup --partition-secs 60
//! ```
//!
//! The node processes are the `meridian-node` next to this binary (so a
//! release build of the bench runs release nodes).
//!
//! Parts (`--part`), each on a fresh three-region cluster (a, b, c):
//! - `reroute`: `--cuts` cuts (20), rotating over the links a–b, b–c and
//!   a–c, under steady load in both directions of every link. A sample is the
//!   time from the cut until the first message sent after the cut has been
//!   delivered across the cut pair over the detour, in both directions (the
//!   later of the two). Then the link is healed, and the next cut waits until
//!   every link is Up and direct at both ends again (so that each cut is the
//!   only fault; the time the healed link took is printed too).
//! - `catchup`: region a is cut off from b and c while a user in a sends
//!   `--partition-rate` msg/s (1,000, open loop) for `--partition-secs` (60)
//!   to a group homed in b; a acknowledges and queues them. Then the links
//!   are healed and the sends stop; catch-up time is from the heal to the
//!   last queued message delivered to every member (in a, b and c), and the
//!   rate is queued messages over that time.
//! - `detour`: send-to-deliver latency from a user in a to a member in b of a
//!   group homed in b, open loop at `--detour-rate` msg/s, first with the
//!   link a–b up (direct), then with it cut (a→c→b, one relay hop).
//!   Latencies are measured from each send's intended time.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use meridian_node::client::Client;
use meridian_node::proto::peer_api::LinkCondition;
use meridian_tests::faults::checker::Report;
use meridian_tests::faults::cluster::Cluster;
use meridian_tests::faults::workload::{AckEvent, DeliveryEvent, Recorder, Workload};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const REGIONS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    All,
    Reroute,
    Catchup,
    Detour,
}

/// Measures reroute time after a cut, catch-up after a partition, and the
/// latency cost of one detour hop, on real processes with real link cuts.
#[derive(Debug, Parser)]
#[command(name = "fault-bench", version)]
struct Args {
    /// Which part to run.
    #[arg(long, value_enum, default_value = "all")]
    part: Part,
    /// Reroute: how many cuts.
    #[arg(long, default_value_t = 20)]
    cuts: usize,
    /// Reroute: each of the six senders sends once per this many ms.
    #[arg(long, default_value_t = 20)]
    reroute_every_ms: u64,
    /// Catch-up: how long region a is cut off, in seconds.
    #[arg(long, default_value_t = 60)]
    partition_secs: u64,
    /// Catch-up: sends per second from inside a while it is cut off.
    #[arg(long, default_value_t = 1000.0)]
    partition_rate: f64,
    /// Detour: sends per second, in both runs.
    #[arg(long, default_value_t = 500.0)]
    detour_rate: f64,
    /// Detour: measured seconds of each run.
    #[arg(long, default_value_t = 20)]
    detour_secs: u64,
    /// Detour: unmeasured seconds of load before each run's measured ones.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
}

/// The region of a session (`a1`), a user (`a1@a`) or a group (`gb@b`).
fn region(name: &str) -> &str {
    match name.rsplit_once('@') {
        Some((_, home)) => home,
        None => &name[..1],
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds")
}

/// `p50 … max` in milliseconds.
fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:7.2}  p90 {:7.2}  p99 {:7.2}  p99.9 {:7.2}  max {:7.2} ms  (count {})",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// Users `<r>1@<r>`, groups `g<r>@<r>` owned by them, every user a member of
/// every group. Returns each region's logged-in client.
async fn mesh_users(cluster: &Cluster) -> BTreeMap<String, Client> {
    let mut clients = BTreeMap::new();
    for code in REGIONS {
        let mut client = cluster.user(&format!("{code}1@{code}"), code).await;
        client
            .create_group(&format!("g{code}"))
            .await
            .unwrap_or_else(|e| panic!("create g{code}@{code}: {e}"));
        clients.insert(code.to_owned(), client);
    }
    for (code, client) in &mut clients {
        for other in REGIONS.iter().filter(|r| *r != code) {
            client
                .join(&format!("g{other}@{other}"))
                .await
                .unwrap_or_else(|e| panic!("{code}1 joins g{other}@{other}: {e}"));
        }
    }
    clients
}

/// Waits until the recorder holds `want` deliveries (at most `timeout`).
async fn deliveries_reach(recorder: &Recorder, want: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if recorder.counts().1 >= want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn verdict(name: &str, report: &Report) -> bool {
    println!("{name}: checker: {report}");
    report.is_clean()
}

// ---------------------------------------------------------------------------
// Open-loop sends.

/// What an open-loop run did.
struct Sent {
    /// The recorder's time of send 0's intended start.
    t0: Duration,
    rate: f64,
    issued: u64,
    acked: u64,
    /// Attempts that failed or timed out (each was retried with its key).
    failed_attempts: u64,
    /// When the last acknowledgement came, on the recorder's clock.
    last_ack: Duration,
}

impl Sent {
    /// The intended start of send `i`, on the recorder's clock.
    fn intended(&self, i: u64) -> Duration {
        self.t0 + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Sends `count` messages to `group` at `rate` per second as `client`, send
/// `i` with idempotency key (and body) `<label>-<i>`, due at `t0 + i / rate`
/// whatever happened to the earlier ones (a thread paces them: the runtime's
/// timers tick in milliseconds). A failed attempt is retried with the same
/// key until acknowledged; acknowledgements go to `recorder`.
async fn open_loop(
    recorder: &Arc<Recorder>,
    client: &Client,
    label: &str,
    group: &str,
    rate: f64,
    count: u64,
) -> Sent {
    const MAX_IN_FLIGHT: usize = 512;
    const ATTEMPT: Duration = Duration::from_secs(3);
    let lead = Duration::from_millis(20);
    let (now, std_now) = (recorder.now(), std::time::Instant::now());
    let t0 = now + lead;
    let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let pacer = std::thread::spawn(move || {
        for i in 0..count {
            let at = std_now + lead + Duration::from_secs_f64(i as f64 / rate);
            let now = std::time::Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if due_tx.send(i).is_err() {
                return;
            }
        }
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let failed = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    while let Some(i) = due.recv().await {
        let permit = slots.clone().acquire_owned().await.expect("open semaphore");
        let (recorder, mut client) = (recorder.clone(), client.clone());
        let (group, label) = (group.to_owned(), label.to_owned());
        let (failed, acked) = (failed.clone(), acked.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let key = format!("{label}-{i}");
            loop {
                match tokio::time::timeout(ATTEMPT, client.send(&group, &key, &key)).await {
                    Ok(Ok(reply)) => {
                        let event = AckEvent {
                            at: recorder.now(),
                            session: label.clone(),
                            group: group.clone(),
                            key: key.clone(),
                            message_id: reply.message_id,
                            sent_at: t0 + Duration::from_secs_f64(i as f64 / rate),
                        };
                        recorder.acked(event, reply.seq);
                        acked.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
    }
    let _ = pacer.join();
    // Every slot back means every send was acknowledged.
    let all = u32::try_from(MAX_IN_FLIGHT).expect("small");
    if tokio::time::timeout(Duration::from_secs(120), slots.acquire_many(all))
        .await
        .is_err()
    {
        println!("  (some sends were still unacknowledged after 120 s)");
    }
    Sent {
        t0,
        rate,
        issued: count,
        acked: acked.load(Ordering::Relaxed),
        failed_attempts: failed.load(Ordering::Relaxed),
        last_ack: recorder.now(),
    }
}

// ---------------------------------------------------------------------------
// (a) Reroute time after a cut.

/// For each `(from, to)`: the first delivery, at `to`'s session, of a message
/// from `from`'s user, in a group homed at `from` or `to` (so it crossed the
/// cut pair), whose first attempt was at or after `since`; its time after
/// `since`.
fn first_across(
    recorder: &Recorder,
    acks_from: usize,
    deliveries_from: usize,
    pairs: &[(&str, &str)],
    since: Duration,
) -> Vec<Option<Duration>> {
    let sent: HashMap<String, Duration> = recorder
        .acks_since(acks_from)
        .into_iter()
        .map(|a| (a.key, a.sent_at))
        .collect();
    let deliveries: Vec<DeliveryEvent> = recorder.deliveries_since(deliveries_from);
    pairs
        .iter()
        .map(|(from, to)| {
            deliveries
                .iter()
                .filter(|d| region(&d.session) == *to && region(&d.sender) == *from)
                .filter(|d| [*from, *to].contains(&region(&d.group)))
                .filter(|d| sent.get(&d.body).is_some_and(|s| *s >= since))
                .map(|d| d.at.saturating_sub(since))
                .min()
        })
        .collect()
}

/// Waits until both ends of `a`–`b` show it Up and direct.
async fn wait_direct(cluster: &Cluster, a: &str, b: &str, timeout: Duration) -> Option<Duration> {
    let (ab, ba) = tokio::join!(
        cluster.wait_link(a, b, timeout, |l| l.condition() == LinkCondition::Up
            && l.path == [a, b]),
        cluster.wait_link(b, a, timeout, |l| l.condition() == LinkCondition::Up
            && l.path == [b, a]),
    );
    Some(ab?.1.max(ba?.1))
}

async fn reroute(args: &Args) -> bool {
    println!(
        "== reroute: {} cuts, rotating over a-b, b-c, a-c; 6 senders, one send each per {} ms",
        args.cuts, args.reroute_every_ms
    );
    let cluster = Cluster::start(&REGIONS).await;
    let clients = mesh_users(&cluster).await;
    let groups: Vec<String> = REGIONS.iter().map(|r| format!("g{r}@{r}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut workload = Workload::new();
    let every = Duration::from_millis(args.reroute_every_ms);
    for (i, code) in REGIONS.iter().enumerate() {
        let client = &clients[*code];
        workload.subscribe(&format!("{code}1"), client, &groups);
        let next = REGIONS[(i + 1) % REGIONS.len()];
        workload.send(
            &format!("{code}1"),
            client,
            &format!("g{next}@{next}"),
            every,
        );
        workload.send(
            &format!("{code}1l"),
            client,
            &format!("g{code}@{code}"),
            every,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorder = workload.recorder.clone();

    let pairs = [("a", "b"), ("b", "c"), ("a", "c")];
    let mut samples = Vec::new();
    let mut per_direction = Vec::new();
    for k in 0..args.cuts {
        let (x, y) = pairs[k % pairs.len()];
        // Every link up and direct first, so that the cut is the only fault.
        for (a, b) in pairs {
            if wait_direct(&cluster, a, b, Duration::from_secs(60))
                .await
                .is_none()
            {
                println!(
                    "cut {:2} {x}-{y}: {a}-{b} did not route directly within 60 s",
                    k + 1
                );
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (acks_from, deliveries_from) = recorder.counts();
        cluster.cut(x, y);
        let cut_at = recorder.now();
        let flows = async {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let found = first_across(
                    &recorder,
                    acks_from,
                    deliveries_from,
                    &[(x, y), (y, x)],
                    cut_at,
                );
                if found.iter().all(Option::is_some) || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // An acknowledgement may be recorded just after its delivery.
            tokio::time::sleep(Duration::from_millis(300)).await;
            first_across(
                &recorder,
                acks_from,
                deliveries_from,
                &[(x, y), (y, x)],
                cut_at,
            )
        };
        let detoured = cluster.wait_link(x, y, Duration::from_secs(5), |l| {
            l.condition() == LinkCondition::Detoured
        });
        let (found, detoured) = tokio::join!(flows, detoured);
        cluster.heal(x, y);
        let back_direct = wait_direct(&cluster, x, y, Duration::from_secs(60)).await;
        let (Some(there), Some(back)) = (found[0], found[1]) else {
            println!(
                "cut {:2} {x}-{y}: traffic did not flow within 15 s: {found:?}",
                k + 1
            );
            return false;
        };
        let sample = there.max(back);
        samples.push(sample);
        per_direction.extend([there, back]);
        let seen = match detoured {
            Some((link, took)) => format!(
                "{x} showed Detoured {} after {}",
                link.path.join("→"),
                secs(took)
            ),
            None => format!("{x} never showed Detoured"),
        };
        println!(
            "cut {:2} {x}-{y}: {x}→{y} {}, {y}→{x} {}; sample {} ({seen}; after the heal, Up \
             and direct again at both ends after {})",
            k + 1,
            secs(there),
            secs(back),
            secs(sample),
            back_direct.map_or("more than 60 s".to_owned(), secs)
        );
    }
    let clean = verdict("reroute", &workload.finish(Duration::from_secs(30)).await);
    samples.sort();
    per_direction.sort();
    println!(
        "reroute time after a cut, over {} cuts: median {}, worst {} (best {}); per direction \
         ({} samples): median {}, worst {}",
        samples.len(),
        secs(median(&samples)),
        secs(*samples.last().unwrap_or(&Duration::ZERO)),
        secs(*samples.first().unwrap_or(&Duration::ZERO)),
        per_direction.len(),
        secs(median(&per_direction)),
        secs(*per_direction.last().unwrap_or(&Duration::ZERO)),
    );
    println!(
        "samples (s): {}",
        samples
            .iter()
            .map(|s| format!("{:.3}", s.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    clean
}

// ---------------------------------------------------------------------------
// (b) Catch-up after a partition.

async fn catchup(args: &Args) -> bool {
    let count = (args.partition_rate * args.partition_secs as f64).round() as u64;
    println!(
        "== catch-up: a cut off from b and c for {} s while a1@a sends {} msg/s to gb@b ({count} \
         messages); members of gb@b in a, b and c",
        args.partition_secs, args.partition_rate
    );
    let cluster = Cluster::start(&REGIONS).await;
    let clients = mesh_users(&cluster).await;
    let mut workload = Workload::new();
    for code in REGIONS {
        workload.subscribe(&format!("{code}1"), &clients[code], &["gb@b"]);
    }
    let recorder = workload.recorder.clone();
    // One message first, so that every stream is open.
    let warm = open_loop(&recorder, &clients["a"], "warm", "gb@b", 10.0, 1).await;
    if warm.acked != 1 || !deliveries_reach(&recorder, REGIONS.len(), Duration::from_secs(20)).await
    {
        println!("catch-up: the first message did not reach every member");
        return false;
    }
    let (acks_from, deliveries_from) = recorder.counts();

    cluster.isolate("a");
    let isolated_at = recorder.now();
    for peer in ["b", "c"] {
        if cluster
            .wait_link("a", peer, Duration::from_secs(5), |l| {
                l.condition() == LinkCondition::Down
            })
            .await
            .is_none()
        {
            println!("catch-up: a did not see its link to {peer} Down within 5 s");
        }
    }
    let detected = recorder.now() - isolated_at;
    let sent = open_loop(
        &recorder,
        &clients["a"],
        "backlog",
        "gb@b",
        args.partition_rate,
        count,
    )
    .await;
    let sending = sent.last_ack.saturating_sub(sent.t0);
    let leaked = recorder
        .deliveries_since(deliveries_from)
        .iter()
        .filter(|d| region(&d.session) != "a")
        .count();
    println!(
        "sent {} (acknowledged {}, {} failed attempts retried) in {} after a saw the cut ({}): \
         {:.0} msg/s acknowledged; delivered outside a while cut off: {leaked}",
        sent.issued,
        sent.acked,
        sent.failed_attempts,
        secs(sending),
        secs(detected),
        sent.acked as f64 / sending.as_secs_f64(),
    );

    cluster.rejoin("a");
    let healed_at = recorder.now();
    println!(
        "healed after {} cut off",
        secs(healed_at.saturating_sub(isolated_at))
    );
    let want = deliveries_from + sent.acked as usize * REGIONS.len();
    let (ab, ac, all) = tokio::join!(
        cluster.wait_link("a", "b", Duration::from_secs(60), |l| l.condition()
            == LinkCondition::Up),
        cluster.wait_link("a", "c", Duration::from_secs(60), |l| l.condition()
            == LinkCondition::Up),
        deliveries_reach(&recorder, want, Duration::from_secs(900)),
    );
    let up = |l: Option<(_, Duration)>| l.map_or("never".to_owned(), |(_, t)| secs(t));
    println!(
        "a's links Up again after the heal: a-b {}, a-c {}",
        up(ab),
        up(ac)
    );
    if !all {
        println!("catch-up: the backlog was not delivered within 900 s");
    }
    let backlog: HashMap<String, ()> = recorder
        .acks_since(acks_from)
        .into_iter()
        .map(|a| (a.key, ()))
        .collect();
    let deliveries: Vec<DeliveryEvent> = recorder
        .deliveries_since(deliveries_from)
        .into_iter()
        .filter(|d| backlog.contains_key(&d.body))
        .collect();
    let first = deliveries.iter().map(|d| d.at).min().unwrap_or_default();
    let last = deliveries.iter().map(|d| d.at).max().unwrap_or_default();
    for code in REGIONS {
        let at: Vec<Duration> = deliveries
            .iter()
            .filter(|d| region(&d.session) == code)
            .map(|d| d.at)
            .collect();
        println!(
            "  member in {code}: {} of {} delivered, first {} and last {} after the heal",
            at.len(),
            backlog.len(),
            secs(
                at.iter()
                    .min()
                    .copied()
                    .unwrap_or_default()
                    .saturating_sub(healed_at)
            ),
            secs(
                at.iter()
                    .max()
                    .copied()
                    .unwrap_or_default()
                    .saturating_sub(healed_at)
            ),
        );
    }
    let catch_up = last.saturating_sub(healed_at);
    println!(
        "catch-up after a {} s partition at {} msg/s: {} queued messages; heal → first delivered \
         {}, heal → last delivered to every member {}; rate {:.0} msg/s ({:.0} deliveries/s to \
         3 members)",
        args.partition_secs,
        args.partition_rate,
        backlog.len(),
        secs(first.saturating_sub(healed_at)),
        secs(catch_up),
        backlog.len() as f64 / catch_up.as_secs_f64(),
        deliveries.len() as f64 / catch_up.as_secs_f64(),
    );
    let report = recorder.check();
    workload.finish(Duration::from_secs(5)).await;
    verdict("catch-up", &report) && all
}

// ---------------------------------------------------------------------------
// (c) The latency cost of one detour hop.

/// One open-loop run from a1@a to gb@b; the send-to-deliver latencies at b1.
async fn latency_run(
    args: &Args,
    recorder: &Arc<Recorder>,
    client: &Client,
    label: &str,
) -> Option<Histogram<u64>> {
    let warmup = (args.detour_rate * args.warmup_secs as f64).round() as u64;
    let count = warmup + (args.detour_rate * args.detour_secs as f64).round() as u64;
    let (_, deliveries_from) = recorder.counts();
    let sent = open_loop(recorder, client, label, "gb@b", args.detour_rate, count).await;
    if !deliveries_reach(
        recorder,
        deliveries_from + sent.acked as usize,
        Duration::from_secs(60),
    )
    .await
    {
        println!("{label}: not everything was delivered within 60 s");
        return None;
    }
    let prefix = format!("{label}-");
    let mut latency = histogram();
    let mut seen = std::collections::HashSet::new();
    for d in recorder.deliveries_since(deliveries_from) {
        let Some(i) = d
            .body
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<u64>().ok())
        else {
            continue;
        };
        if i < warmup || !seen.insert(i) {
            continue;
        }
        let micros = d.at.saturating_sub(sent.intended(i)).as_micros();
        latency.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
    }
    println!(
        "{label:>6}: {}  [{} sent, {} failed attempts retried]",
        percentiles(&latency),
        sent.issued,
        sent.failed_attempts
    );
    Some(latency)
}

async fn detour(args: &Args) -> bool {
    println!(
        "== detour: send-to-deliver a1@a → gb@b → member b1@b, {} msg/s open loop, {} s measured \
         after {} s of warm-up, with a-b up (direct) and cut (a→c→b)",
        args.detour_rate, args.detour_secs, args.warmup_secs
    );
    let cluster = Cluster::start(&REGIONS).await;
    let clients = mesh_users(&cluster).await;
    let mut workload = Workload::new();
    workload.subscribe("b1", &clients["b"], &["gb@b"]);
    let recorder = workload.recorder.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let Some(direct) = latency_run(args, &recorder, &clients["a"], "direct").await else {
        return false;
    };
    cluster.cut("a", "b");
    let (ab, ba) = tokio::join!(
        cluster.wait_link("a", "b", Duration::from_secs(5), |l| l.path
            == ["a", "c", "b"]),
        cluster.wait_link("b", "a", Duration::from_secs(5), |l| l.path
            == ["b", "c", "a"]),
    );
    if ab.is_none() || ba.is_none() {
        println!("detour: a-b did not detour via c within 5 s");
        return false;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let relayed =
        || cluster.link("c", "b").forwarded_bytes() + cluster.link("c", "a").forwarded_bytes();
    let relayed_before = relayed();
    let detoured = latency_run(args, &recorder, &clients["a"], "detour").await;
    println!(
        "c relayed {} bytes during the detour run",
        relayed() - relayed_before
    );
    cluster.heal("a", "b");
    let Some(detoured) = detoured else {
        return false;
    };
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "one detour hop costs: p50 {:+.2} ms, p90 {:+.2} ms, p99 {:+.2} ms",
        q(&detoured, 0.5) - q(&direct, 0.5),
        q(&detoured, 0.9) - q(&direct, 0.9),
        q(&detoured, 0.99) - q(&direct, 0.99),
    );
    let report = recorder.check();
    workload.finish(Duration::from_secs(5)).await;
    verdict("detour", &report)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let mut clean = true;
    if matches!(args.part, Part::All | Part::Reroute) {
        let began = Instant::now();
        clean &= reroute(&args).await;
        println!("(reroute part took {})\n", secs(began.elapsed()));
    }
    if matches!(args.part, Part::All | Part::Catchup) {
        let began = Instant::now();
        clean &= catchup(&args).await;
        println!("(catch-up part took {})\n", secs(began.elapsed()));
    }
    if matches!(args.part, Part::All | Part::Detour) {
        let began = Instant::now();
        clean &= detour(&args).await;
        println!("(detour part took {})\n", secs(began.elapsed()));
    }
    println!("fault-bench took {}", secs(started.elapsed()));
    if clean {
        ExitCode::SUCCESS
    } else {
        println!("fault-bench: a part failed or the checker found a violation (see above)");
        ExitCode::FAILURE
    }
}
