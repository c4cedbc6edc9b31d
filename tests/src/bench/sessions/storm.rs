//! Scenario `reconnect-storm`: `sessions` sessions, each a token of its own
//! holding one subscription with one cursor (users log in once per session,
//! [`crowd::PER_USER`] sessions per user, users in groups of `group_size`),
//! are all cut at once, a message is sent to every group while they are
//! away, and then every session comes back at the same moment: it
//! connects, subscribes with its token and cursor, and has resumed once the
//! message it missed arrives (the catch-up from history). Measured from
//! that moment: each session's time to connect, to be subscribed and to
//! resume (p50/p99), the time until the last one has, and the failures
//! they met and retried (a connection refused, the service center's
//! subscription cap reached while the cut subscriptions are being torn
//! down, …).
//!
//! By default each session has a connection of its own, as a device would
//! (`connections` shares fewer among them). The sessions were all issued by
//! this service center just before, so with 10,000 of them they are all in
//! its session cache (10,000, least recently used out) unless more are.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use meridian_node::client::Client;
use meridian_node::proto::client_api::{Cursor, Event, event};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::Streaming;

use super::crowd;
use crate::bench::report::{Percentiles, Row, histogram, record};
use crate::bench::setup::Ctx;

pub struct Params {
    pub region: String,
    pub sessions: usize,
    /// Connections the returning sessions are dealt over (made anew).
    pub connections: usize,
    pub group_size: usize,
    /// A session that has not resumed after this long is given up.
    pub give_up: Duration,
}

pub struct Figures {
    pub sessions: usize,
    pub resumed: usize,
    /// Until the last session resumed (`None` when one never did).
    pub all_resumed: Option<Duration>,
    pub resume: Percentiles,
    pub subscribed: Percentiles,
    pub failures: BTreeMap<String, u64>,
    pub rows: Vec<Row>,
}

/// Sessions coming back at once in the first, unmeasured connect.
const FIRST_CONNECT_IN_FLIGHT: usize = 256;

/// One session: its token, its group, and its cursor there.
#[derive(Clone)]
struct Session {
    token: String,
    group: String,
    after: u64,
}

/// What happened to one session, times from the start of its phase.
#[derive(Default)]
struct Outcome {
    connected: Option<Duration>,
    subscribed: Option<Duration>,
    resumed: Option<Duration>,
    stream: Option<Streaming<Event>>,
}

/// What a phase tallies over its sessions.
#[derive(Default)]
struct Tally {
    connected: Option<Histogram<u64>>,
    subscribed: Option<Histogram<u64>>,
    resumed: Option<Histogram<u64>>,
    failures: BTreeMap<String, u64>,
    last: Duration,
    done: usize,
}

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Figures> {
    let region = params.region.as_str();
    let n = params.sessions;
    let users = n.div_ceil(crowd::PER_USER);
    println!(
        "\n-- reconnect-storm: {n} sessions ({users} users, {} sessions each, groups of {}) cut at once and resumed at once by token and cursor over {} new connections",
        crowd::PER_USER,
        params.group_size,
        params.connections
    );
    let setup = crowd::connections(ctx, region, 4).await?;
    let names = crowd::names(ctx, "storm-u", region, users);
    let registered = crowd::register(&setup, &names).await?;
    // Session i is user i % users's: a user's logins are spread out, as at
    // most 5 of one user's may be in progress at once.
    let logins: Vec<String> = (0..n).map(|i| names[i % users].clone()).collect();
    let (tokens, logged_in) = crowd::login(&setup, &logins).await?;
    // The group of each user (by the user's first session's token).
    let firsts: Vec<String> = tokens[..users].to_vec();
    let groups = crowd::groups(ctx, &setup, &firsts, "storm-g", params.group_size).await?;
    println!(
        "  {users} users registered in {registered:.1} s; {n} sessions logged in in {logged_in:.1} s"
    );
    // Whoever created each group sends to it: one message now, one while
    // the sessions are away.
    let owners: Vec<(String, String)> = firsts
        .iter()
        .step_by(params.group_size.max(1))
        .zip(groups.iter().step_by(params.group_size.max(1)))
        .map(|(t, g)| (t.clone(), g.clone()))
        .collect();
    let seqs = send_each(ctx, &setup, &owners, 1).await?;
    // Each session first waits for that message.
    let mut sessions: Vec<Session> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let group = groups[i % users].clone();
            Session {
                token: token.clone(),
                after: seqs[&group] - 1,
                group,
            }
        })
        .collect();

    let url = ctx.endpoints.client(region)?.to_owned();
    let tls = ctx.endpoints.tls()?;
    let first = phase(
        &url,
        &tls,
        &sessions,
        params.connections,
        Some(FIRST_CONNECT_IN_FLIGHT),
        params.give_up,
    )
    .await;
    println!(
        "  first connect ({FIRST_CONNECT_IN_FLIGHT} at a time): {} of {n} subscribed and had the first message in {:.1} s{}",
        first.0.done,
        first.0.last.as_secs_f64(),
        failures_note(&first.0.failures)
    );
    anyhow::ensure!(
        first.0.done == n,
        "only {} of {n} sessions subscribed before the storm",
        first.0.done
    );

    // The cut: every stream and every connection dropped at once. Each
    // session comes back with its cursor at the message it had.
    drop(first);
    for session in &mut sessions {
        session.after += 1;
    }
    send_each(ctx, &setup, &owners, 2).await?;
    let probe = crowd::probe(&ctx.endpoints, region)?;
    let window = tokio::task::block_in_place(|| probe.start());
    let (tally, streams) = phase(
        &url,
        &tls,
        &sessions,
        params.connections,
        None,
        params.give_up,
    )
    .await;
    let usage = tokio::task::block_in_place(|| probe.finish(window));
    drop(streams);

    let pct = |h: &Option<Histogram<u64>>| h.as_ref().map(Percentiles::of).unwrap_or_default();
    let all_resumed = (tally.done == n).then_some(tally.last);
    let mut lines = vec![format!(
        "{} of {n} resumed; the last {:.2} s after the cut ended{}",
        tally.done,
        tally.last.as_secs_f64(),
        failures_note(&tally.failures)
    )];
    let center = usage
        .groups
        .first()
        .map(|(_, cpu)| *cpu)
        .unwrap_or_default();
    lines.push(format!(
        "the service center spent {center:.2} s CPU over the storm's {:.2} s ({:.0} µs per resumed session)",
        usage.seconds,
        center / tally.done.max(1) as f64 * 1e6
    ));
    lines.extend(usage.lines(0).into_iter().map(|l| format!("  {l}")));
    let rows = vec![
        Row::Latency {
            label: "storm: connected".into(),
            percentiles: pct(&tally.connected),
            note: String::new(),
        },
        Row::Latency {
            label: "storm: subscribed".into(),
            percentiles: pct(&tally.subscribed),
            note: String::new(),
        },
        Row::Latency {
            label: "storm: resumed (missed message in)".into(),
            percentiles: pct(&tally.resumed),
            note: String::new(),
        },
        Row::Text {
            label: format!("reconnect storm, {region}"),
            lines,
        },
    ];
    Ok(Figures {
        sessions: n,
        resumed: tally.done,
        all_resumed,
        resume: pct(&tally.resumed),
        subscribed: pct(&tally.subscribed),
        failures: tally.failures,
        rows,
    })
}

fn failures_note(failures: &BTreeMap<String, u64>) -> String {
    if failures.is_empty() {
        return ", no failure".into();
    }
    let list: Vec<String> = failures.iter().map(|(k, v)| format!("{k} {v}x")).collect();
    format!(", failures retried: {}", list.join(", "))
}

/// Each owner sends message `n` to its group; the seq of each group's.
async fn send_each(
    ctx: &Ctx,
    clients: &[Client],
    owners: &[(String, String)],
    n: u64,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut seqs = BTreeMap::new();
    for (i, (token, group)) in owners.iter().enumerate() {
        let mut client = crowd::as_session(&clients[i % clients.len()], token)?;
        let key = format!("{}-storm-{group}-{n}", ctx.prefix);
        let reply = client
            .send(group, &format!("storm message {n}"), &key)
            .await
            .map_err(|s| anyhow::anyhow!("send to {group}: {}", s.message()))?;
        anyhow::ensure!(
            reply.seq > 0,
            "the send to {group} was queued, not sequenced"
        );
        seqs.insert(group.clone(), reply.seq);
    }
    Ok(seqs)
}

/// Every session connects (`connections` connections, dealt in turn),
/// subscribes after its cursor and waits for the next message, all at once or
/// `in_flight` connections at a time; each retried until `give_up`. The
/// tally, and the streams (held until dropped).
async fn phase(
    url: &str,
    tls: &Option<Arc<rustls::ClientConfig>>,
    sessions: &[Session],
    connections: usize,
    in_flight: Option<usize>,
    give_up: Duration,
) -> (Tally, Vec<Streaming<Event>>) {
    let connections = connections.clamp(1, sessions.len().max(1));
    let started = Instant::now();
    let deadline = started + give_up;
    let gate = in_flight.map(|n| Arc::new(Semaphore::new(n)));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let resumed = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let resumed = resumed.clone();
        let total = sessions.len();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = resumed.load(Ordering::Relaxed);
                println!(
                    "    {:.0} s: {done} of {total} resumed",
                    started.elapsed().as_secs_f64()
                );
                if done >= total {
                    return;
                }
            }
        })
    };
    let mut buckets = Vec::with_capacity(connections);
    for c in 0..connections {
        let mine: Vec<Session> = sessions
            .iter()
            .skip(c)
            .step_by(connections)
            .cloned()
            .collect();
        let (url, tls, gate) = (url.to_owned(), tls.clone(), gate.clone());
        let (failures, resumed) = (failures.clone(), resumed.clone());
        buckets.push(tokio::spawn(async move {
            let _permit = match &gate {
                Some(gate) => Some(gate.clone().acquire_owned().await.expect("open")),
                None => None,
            };
            let fail =
                |what: String| *failures.lock().expect("failures").entry(what).or_insert(0) += 1;
            let mut attempt = 0;
            let client = loop {
                match Client::connect(&url, tls.clone()).await {
                    Ok(client) => break Some(client),
                    Err(e) if Instant::now() < deadline => {
                        fail(format!("connect ({})", root_cause(&e)));
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Err(_) => break None,
                }
            };
            let Some(client) = client else {
                return mine.iter().map(|_| Outcome::default()).collect::<Vec<_>>();
            };
            let connected = started.elapsed();
            let each = mine.into_iter().map(|session| {
                let client = client.clone();
                let fail = &fail;
                let resumed = &resumed;
                async move {
                    let mut outcome = resume(client, &session, started, deadline, fail).await;
                    outcome.connected = Some(connected);
                    if outcome.resumed.is_some() {
                        resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                }
            });
            futures::future::join_all(each).await
        }));
    }
    let mut tally = Tally::default();
    let mut streams = Vec::with_capacity(sessions.len());
    for bucket in buckets {
        let Ok(outcomes) = bucket.await else {
            continue;
        };
        for outcome in outcomes {
            for (slot, at) in [
                (&mut tally.connected, outcome.connected),
                (&mut tally.subscribed, outcome.subscribed),
                (&mut tally.resumed, outcome.resumed),
            ] {
                if let Some(at) = at {
                    record(slot.get_or_insert_with(histogram), at);
                }
            }
            if let Some(at) = outcome.resumed {
                tally.done += 1;
                tally.last = tally.last.max(at);
            }
            streams.extend(outcome.stream);
        }
    }
    ticker.abort();
    tally.failures = std::mem::take(&mut *failures.lock().expect("failures"));
    (tally, streams)
}

/// How long a client waits before its `attempt`th retry: doubling from
/// 100 ms to 800 ms, with up to 50 ms of jitter so that retries spread.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.clamp(1, 4)) + rand::random::<u64>() % 50)
}

/// The innermost error of `e`'s chain, shortened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string().chars().take(60).collect()
}

/// Subscribes `session` after its cursor until the next message arrives,
/// again after every failure until `deadline`.
async fn resume(
    client: Client,
    session: &Session,
    started: Instant,
    deadline: Instant,
    fail: &(dyn Fn(String) + Sync),
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(mut client) = crowd::as_session(&client, &session.token) else {
        fail("bad token".into());
        return outcome;
    };
    let cursor = Cursor {
        group: session.group.clone(),
        last_seq: session.after,
    };
    let mut attempt = 0;
    while Instant::now() < deadline {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        attempt += 1;
        let mut stream = match client.subscribe(vec![cursor.clone()]).await {
            Ok(stream) => stream,
            Err(s) => {
                fail(format!("subscribe {:?}", s.code()));
                continue;
            }
        };
        outcome.subscribed.get_or_insert(started.elapsed());
        let next = tokio::time::timeout_at(deadline, async {
            loop {
                match stream.message().await {
                    Ok(Some(Event {
                        kind: Some(event::Kind::Delivery(d)),
                    })) if d.group == session.group && d.seq > session.after => return Ok(()),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err("stream ended".to_owned()),
                    Err(s) => return Err(format!("stream {:?}", s.code())),
                }
            }
        })
        .await;
        match next {
            Ok(Ok(())) => {
                outcome.resumed = Some(started.elapsed());
                outcome.stream = Some(stream);
                return outcome;
            }
            Ok(Err(what)) => fail(what),
            Err(_) => fail("no delivery before giving up".into()),
        }
    }
    outcome
}
