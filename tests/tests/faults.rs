//! Fault scenarios (issue 4, §5) on real processes: every region's service
//! center and roaming system run as separate `meridian-node` processes on
//! their own host (a network namespace; loopback when namespaces cannot be
//! made), under steady load, while links are cut and processes are killed.
//! The invariant checker then verifies that every acknowledged message
//! reached every member session exactly once, in order, with no gap.
//!
//! Needs the workspace's binaries: `cargo build --workspace --bins`.
//! The scenarios run one at a time (the harness serializes them). Each prints
//! its timings and the checker's counts; run with `--nocapture` to see them.

use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::mesh::health::HealthPolicy;
use meridian_node::proto::peer_api::LinkCondition;
use meridian_tests::faults::checker::Report;
use meridian_tests::faults::cluster::{Cluster, Process};
use meridian_tests::faults::workload::{DeliveryEvent, Workload};

/// How long a region is cut off from every other region in scenario 3. The
/// issue asks for 30 s; CI uses 10 s to keep the suite short. The behaviour
/// does not depend on the length (the backlog waits in durable outboxes).
const ISOLATION: Duration = Duration::from_secs(10);
/// Each sender sends once per this; four senders make 400 msg/s.
const SEND_EVERY: Duration = Duration::from_millis(10);
/// A cut must be seen within the node's detection bound (see
/// `HealthPolicy::detection_bound`: 1.45 s by default), plus 250 ms for this
/// test's polling and for scheduling on a busy two-core machine.
fn detect_within() -> Duration {
    HealthPolicy::default().detection_bound() + Duration::from_millis(250)
}
/// After the load stops, everything acknowledged must arrive within this.
const SETTLE: Duration = Duration::from_secs(30);
/// A healed link must be Up and direct again within this (three answered
/// heartbeats, more after a flap).
const HEAL_WITHIN: Duration = Duration::from_secs(15);

/// Users and groups on a running cluster: one group homed in each of the
/// first two regions, with a member in every region.
struct Chat {
    workload: Workload,
    clients: Vec<(String, Client)>,
}

impl Chat {
    fn client(&self, session: &str) -> &Client {
        &self
            .clients
            .iter()
            .find(|(s, _)| s == session)
            .unwrap_or_else(|| panic!("no session {session}"))
            .1
    }
}

/// In regions `a` and `b`: users `<r>1` and `<r>2`; in every other region
/// `<r>1`. Group `ga@a` (owner a1) and `gb@b` (owner b1); everyone joins both
/// and subscribes to both.
async fn chat(cluster: &Cluster) -> Chat {
    let codes = cluster.codes();
    let mut clients = Vec::new();
    for code in &codes {
        let count = if code == "a" || code == "b" { 2 } else { 1 };
        for i in 1..=count {
            let user = format!("{code}{i}@{code}");
            clients.push((format!("{code}{i}"), cluster.user(&user, code).await));
        }
    }
    let owner = |code: &str| {
        clients
            .iter()
            .find(|(s, _)| s == &format!("{code}1"))
            .expect("owner")
            .1
            .clone()
    };
    owner("a").create_group("ga").await.expect("create ga@a");
    owner("b").create_group("gb").await.expect("create gb@b");
    for (session, client) in &mut clients {
        for group in ["ga@a", "gb@b"] {
            if (session == "a1" && group == "ga@a") || (session == "b1" && group == "gb@b") {
                continue;
            }
            client
                .join(group)
                .await
                .unwrap_or_else(|e| panic!("{session} joins {group}: {e}"));
        }
    }
    let mut workload = Workload::new();
    for (session, client) in &clients {
        workload.subscribe(session, client, &["ga@a", "gb@b"]);
    }
    Chat { workload, clients }
}

/// Starts the standard load: A and B each send to their own group and to
/// the other's, so A↔B carries submissions and fan-out both ways.
fn load(chat: &mut Chat) {
    for (session, group) in [
        ("a1", "gb@b"),
        ("a2", "ga@a"),
        ("b1", "ga@a"),
        ("b2", "gb@b"),
    ] {
        let client = chat.client(session).clone();
        chat.workload.send(session, &client, group, SEND_EVERY);
    }
}

fn assert_clean(name: &str, report: &Report) {
    eprintln!("{name}: {report}");
    assert!(report.acknowledged > 0, "{name}: nothing was acknowledged");
    assert!(report.is_clean(), "{name}: invariants violated: {report}");
}

/// The first delivery, at a session of region `to`, of a message sent from
/// region `from` whose first send attempt was at or after `since`.
fn first_after(
    deliveries: &[DeliveryEvent],
    acks_sent_at: &std::collections::HashMap<String, Duration>,
    from: &str,
    to: &str,
    since: Duration,
) -> Option<Duration> {
    deliveries
        .iter()
        .filter(|d| d.session.starts_with(to) && d.sender.ends_with(&format!("@{from}")))
        .filter(|d| acks_sent_at.get(&d.body).is_some_and(|sent| *sent >= since))
        .map(|d| d.at)
        .min()
}

fn sent_at(workload: &Workload) -> std::collections::HashMap<String, Duration> {
    workload
        .recorder
        .acks()
        .into_iter()
        .map(|a| (a.key, a.sent_at))
        .collect()
}

/// Waits until, for every `(from, to)`, a message sent from region `from`
/// at or after `since` has reached a session in region `to`; returns the
/// time each took after `since`, or `None` for those that did not within
/// `timeout`.
async fn flows(
    workload: &Workload,
    pairs: &[(&str, &str)],
    since: Duration,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let deliveries = workload.recorder.deliveries();
        let sent = sent_at(workload);
        let found: Vec<Option<Duration>> = pairs
            .iter()
            .map(|(from, to)| first_after(&deliveries, &sent, from, to, since).map(|t| t - since))
            .collect();
        if found.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Heals `a`–`b` and waits until both ends show the link Up and direct, and
/// traffic uses it again.
async fn heal_and_return(
    cluster: &Cluster,
    workload: &Workload,
    a: &str,
    b: &str,
    timeout: Duration,
) {
    cluster.heal(a, b);
    let healed_at = workload.recorder.now();
    let (ab, ba) = tokio::join!(
        cluster.wait_link(a, b, timeout, |l| l.condition() == LinkCondition::Up
            && l.path == [a, b]),
        cluster.wait_link(b, a, timeout, |l| l.condition() == LinkCondition::Up
            && l.path == [b, a]),
    );
    let (link, took) = ab.unwrap_or_else(|| panic!("{a}'s link to {b} is Up and direct again"));
    ba.unwrap_or_else(|| panic!("{b}'s link to {a} is Up and direct again"));
    let direct = cluster.link(a, b).forwarded_bytes();
    let back = flows(
        workload,
        &[(a, b), (b, a)],
        healed_at + took,
        Duration::from_secs(15),
    )
    .await;
    assert!(
        back.iter().all(Option::is_some),
        "{a}↔{b} traffic flows after healing: {back:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        cluster.link(a, b).forwarded_bytes() > direct + 10_000,
        "traffic is back on the direct link {a}–{b}"
    );
    eprintln!(
        "healed {a}-{b}: Up and direct after {took:?} (rtt {:.1} ms)",
        link.rtt_millis.unwrap_or_default()
    );
}

/// Scenario 1 (and, with `strict`, the timing for it): three
/// regions, cut A–B under load.
async fn cut_a_b_under_load(strict: bool) {
    let cluster = Cluster::start(&["a", "b", "c"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // c's own connections to b and a carry only heartbeats (c sends no
    // messages and is no group's home), until c relays the detour.
    let relayed =
        || cluster.link("c", "b").forwarded_bytes() + cluster.link("c", "a").forwarded_bytes();
    let relayed_before = relayed();
    cluster.cut("a", "b");
    let cut_at = chat.workload.recorder.now();
    let (ab, ba) = tokio::join!(
        cluster.wait_link("a", "b", detect_within(), |l| l.condition()
            == LinkCondition::Detoured),
        cluster.wait_link("b", "a", detect_within(), |l| l.condition()
            == LinkCondition::Detoured),
    );
    let (ab, ab_took) = ab.expect("a shows its link to b Detoured within the bound");
    let (ba, ba_took) = ba.expect("b shows its link to a Detoured within the bound");
    assert_eq!(ab.path, ["a", "c", "b"]);
    assert_eq!(ba.path, ["b", "c", "a"]);
    let rerouted = flows(
        &chat.workload,
        &[("a", "b"), ("b", "a")],
        cut_at,
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let via_c = relayed() - relayed_before;
    eprintln!(
        "cut a-b: Detoured via c at a after {ab_took:?}, at b after {ba_took:?}; the first \
         messages sent after the cut arrived a→b after {:?}, b→a after {:?}; c relayed {via_c} \
         bytes",
        rerouted[0], rerouted[1]
    );
    assert!(
        rerouted.iter().all(Option::is_some),
        "a↔b traffic flows via c: {rerouted:?}"
    );
    assert!(via_c > 20_000, "c relayed the load: {via_c} bytes");
    if strict {
        let bound = detect_within() + Duration::from_millis(500);
        assert!(
            rerouted.iter().flatten().all(|t| *t <= bound),
            "a↔b traffic flows via c within {bound:?} of the cut: {rerouted:?}"
        );
    }

    heal_and_return(&cluster, &chat.workload, "a", "b", HEAL_WITHIN).await;
    let report = chat.workload.finish(SETTLE).await;
    assert_clean("cut a-b", &report);
}

/// Scenario 1: three regions, cut A–B under load (400 msg/s). Both ends
/// show the link Detoured through C within the detection bound, A↔B
/// traffic flows through C, and after healing the link is Up and direct
/// again and carries the traffic. Nothing is lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_detours_through_the_third_region_and_returns() {
    cut_a_b_under_load(false).await;
}

/// Scenario 1 with the timing: traffic (not only the link state)
/// takes the detour within the detection bound plus 0.5 s. A carry in flight
/// on the link when it is cut fails as soon as the link is declared down, and
/// the sender's outbox resends it over the detour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_traffic_detours_within_the_detection_bound() {
    cut_a_b_under_load(true).await;
}

/// Scenario 2: four regions; cut A–B and A–C. A reaches B through D, both
/// ways, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cuts_detour_through_the_fourth_region() {
    let cluster = Cluster::start(&["a", "b", "c", "d"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.cut("a", "b");
    cluster.cut("a", "c");
    let cut_at = chat.workload.recorder.now();
    // b sees its own cut within the detection bound, but learns of a–c (to
    // rule out b→c→a) from c's advertisement: one heartbeat later at most.
    let flooded = detect_within() + HealthPolicy::default().interval;
    let (ab, ba) = tokio::join!(
        cluster.wait_link("a", "b", flooded, |l| l.path == ["a", "d", "b"]),
        cluster.wait_link("b", "a", flooded, |l| l.path == ["b", "d", "a"]),
    );
    let (ab, took) = ab.expect("a reaches b via d");
    ba.expect("b reaches a via d");
    assert_eq!(ab.condition(), LinkCondition::Detoured);
    cluster
        .wait_link("a", "c", Duration::from_secs(1), |l| {
            l.condition() == LinkCondition::Detoured && l.path == ["a", "d", "c"]
        })
        .await
        .expect("a reaches c via d");
    let relayed =
        || cluster.link("d", "b").forwarded_bytes() + cluster.link("d", "a").forwarded_bytes();
    let relayed_before = relayed();
    let rerouted = flows(
        &chat.workload,
        &[("a", "b"), ("b", "a")],
        cut_at,
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let via_d = relayed() - relayed_before;
    eprintln!(
        "cut a-b and a-c: a→b via d after {took:?}; the first messages sent after the cuts \
         arrived a→b after {:?}, b→a after {:?}; d relayed {via_d} bytes",
        rerouted[0], rerouted[1]
    );
    assert!(
        rerouted.iter().all(Option::is_some),
        "a↔b traffic flows via d: {rerouted:?}"
    );
    assert!(via_d > 20_000, "d relayed the load: {via_d} bytes");

    cluster.heal("a", "c");
    heal_and_return(&cluster, &chat.workload, "a", "b", HEAL_WITHIN).await;
    let report = chat.workload.finish(SETTLE).await;
    assert_clean("cut a-b and a-c", &report);
}

/// How long scenario 3 isolates region A: [`ISOLATION`], or
/// `MERIDIAN_FAULTS_ISOLATION_SECS` (30 for the full length).
fn isolation() -> Duration {
    std::env::var("MERIDIAN_FAULTS_ISOLATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(ISOLATION)
}

/// Scenario 3: region A is cut off from every other region under load. A's
/// local chat continues, its users still log in, sends to B's group are
/// acknowledged and queued (nothing of them reaches B meanwhile), a remote
/// group read fails with UNAVAILABLE. After healing, the backlog is
/// delivered in order with zero loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_region_serves_locally_and_delivers_its_backlog_after() {
    let cluster = Cluster::start(&["a", "b", "c"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.isolate("a");
    let isolated_at = chat.workload.recorder.now();
    for peer in ["b", "c"] {
        cluster
            .wait_link("a", peer, detect_within(), |l| {
                l.condition() == LinkCondition::Down
            })
            .await
            .unwrap_or_else(|| panic!("a shows {peer} Down"));
    }
    let detected_at = chat.workload.recorder.now();
    // Local service goes on: a login, local history, a remote read refused.
    let mut a2 = cluster.client("a").await;
    a2.login("a2@a", meridian_tests::in_process::PASSWORD)
        .await
        .expect("a's own user logs in while a is cut off");
    assert!(
        !a2.history("ga@a", 0, 10)
            .await
            .expect("local history")
            .is_empty()
    );
    let remote = a2.get_group("gb@b").await.expect_err("b is unreachable");
    assert_eq!(remote.code(), tonic::Code::Unavailable, "{remote:?}");
    tokio::time::sleep(isolation().saturating_sub(detected_at - isolated_at)).await;
    let rejoined_at = chat.workload.recorder.now();

    // What happened while a was cut off (from detection on).
    let window = |t: Duration| t >= detected_at && t < rejoined_at;
    let acks = chat.workload.recorder.acks();
    let deliveries = chat.workload.recorder.deliveries();
    let local = deliveries
        .iter()
        .filter(|d| d.session.starts_with('a') && d.sender.ends_with("@a") && window(d.at))
        .count();
    let queued: Vec<_> = acks
        .iter()
        .filter(|a| a.session.starts_with('a') && a.group == "gb@b" && window(a.sent_at))
        .collect();
    let leaked = deliveries
        .iter()
        .filter(|d| !d.session.starts_with('a') && d.sender.ends_with("@a"))
        .filter(|d| queued.iter().any(|q| q.key == d.body) && d.at < rejoined_at)
        .count();
    eprintln!(
        "isolated a for {:?}: {local} local deliveries at a and {} sends to gb@b acknowledged \
         and queued while cut off",
        rejoined_at - isolated_at,
        queued.len()
    );
    assert!(local > 100, "a's local chat continued: {local} deliveries");
    assert!(
        queued.len() > 100,
        "a's remote sends were acknowledged: {}",
        queued.len()
    );
    assert_eq!(leaked, 0, "nothing crossed the partition");

    cluster.rejoin("a");
    // The backlog drains: every queued message reaches every member of gb.
    let members = chat.workload.recorder.history().members["gb@b"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let caught_up = loop {
        let deliveries = chat.workload.recorder.deliveries();
        let mut last = Duration::ZERO;
        let mut missing = 0;
        for q in &queued {
            let got: Vec<_> = deliveries.iter().filter(|d| d.body == q.key).collect();
            if got.len() < members.len() {
                missing += 1;
            }
            last = got.iter().map(|d| d.at).max().unwrap_or_default().max(last);
        }
        if missing == 0 {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} queued sends never reached every member",
            queued.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "rejoined a: the backlog of {} queued sends reached every member {:?} after the heal",
        queued.len(),
        caught_up.saturating_sub(rejoined_at)
    );
    let report = chat.workload.finish(SETTLE).await;
    assert_clean("isolate a", &report);
}

/// Kills one process with `kill -9` under load, restarts it after a second,
/// and checks that nothing acknowledged was lost.
async fn kill_and_restart(process: Process) {
    let cluster = Cluster::start(&["a", "b", "c"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // b is gb's home and a sender's region: sequencing, fan-out, the outbox
    // and sessions all live there.
    let before = chat.workload.recorder.acks().len();
    cluster.kill9("b", process);
    let killed_at = chat.workload.recorder.now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart("b", process).await;
    let restarted_at = chat.workload.recorder.now();
    let resumed = flows(
        &chat.workload,
        &[("a", "b"), ("b", "a"), ("b", "b")],
        restarted_at,
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "kill -9 b {process}: {before} sends acknowledged before, restarted after {:?}; the \
         first messages sent after the restart arrived a→b {:?}, b→a {:?}, b→b {:?} later",
        restarted_at - killed_at,
        resumed[0],
        resumed[1],
        resumed[2]
    );
    assert!(
        resumed.iter().all(Option::is_some),
        "traffic resumed: {resumed:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = chat.workload.finish(SETTLE).await;
    assert_clean(&format!("kill -9 b {process}"), &report);
}

/// Scenario 4: `kill -9` a service center mid-load, then restart it on the
/// same data directory. No acknowledged message is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_center_loses_nothing_acknowledged() {
    kill_and_restart(Process::ServiceCenter).await;
}

/// Scenario 5: `kill -9` a roaming system mid-load, then restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_roaming_system_loses_nothing_acknowledged() {
    kill_and_restart(Process::Roaming).await;
}

/// Scenario 6: flap A–B 20 times in 10 s under load. Routes settle back on
/// the direct link, nothing is lost, and nothing is duplicated to clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_settles_and_loses_nothing() {
    let cluster = Cluster::start(&["a", "b", "c"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut states = std::collections::BTreeSet::new();
    for _ in 0..20 {
        cluster.cut("a", "b");
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(link) = cluster.link_status("a", "b").await {
            states.insert(link.condition());
        }
        cluster.heal("a", "b");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("flapped a-b 20 times in 10 s; a saw its link to b as {states:?}");
    // Damping: after many flaps a link needs up to ten times the usual
    // successes (30 heartbeats, 15 s) before it carries traffic again.
    heal_and_return(&cluster, &chat.workload, "a", "b", Duration::from_secs(30)).await;
    let report = chat.workload.finish(SETTLE).await;
    assert_clean("flap a-b", &report);
}

/// `SIGSTOP` the service center that is gb's home for 3 s under load, then
/// `SIGCONT` it: its clients' calls time out and are retried, its peers'
/// outboxes wait, and afterwards everything flows again with nothing lost
/// or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_center_resumes_and_loses_nothing() {
    let cluster = Cluster::start(&["a", "b", "c"]).await;
    let mut chat = chat(&cluster).await;
    load(&mut chat);
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.stop("b", Process::ServiceCenter);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.cont("b", Process::ServiceCenter);
    let resumed_at = chat.workload.recorder.now();
    let resumed = flows(
        &chat.workload,
        &[("a", "b"), ("b", "a"), ("b", "b")],
        resumed_at,
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "SIGSTOP b service-center for 3 s: the first messages sent after SIGCONT arrived a→b \
         {:?}, b→a {:?}, b→b {:?} later",
        resumed[0], resumed[1], resumed[2]
    );
    assert!(
        resumed.iter().all(Option::is_some),
        "traffic resumed: {resumed:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = chat.workload.finish(SETTLE).await;
    assert_clean("SIGSTOP b service-center", &report);
}
