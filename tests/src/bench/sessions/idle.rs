//! Scenario `idle-sessions`: `sessions` idle subscriptions held by one
//! service center, and its resident memory (RSS, `/proc/<pid>/status`) per
//! subscription. Users hold [`crowd::PER_USER`] subscriptions each (the
//! most one may), each with one cursor, for a group the user is in; they
//! are dealt over `connections` HTTP/2 connections. The memory is read
//! after the users, their sessions and groups exist (the baseline) and then
//! after every tenth of the subscriptions, each reading once it has
//! settled, so the growth per subscription is what holding one costs the
//! server: its stream, its task and its place in the hub — not the load
//! generator's memory, nor the connections'. At the end every subscription
//! is dropped, and a tenth opened again: RSS then shows whether the freed
//! memory is reused.

use std::time::Instant;

use futures::StreamExt;
use meridian_node::client::Client;
use meridian_node::proto::client_api::{Cursor, Event};
use tonic::Streaming;

use super::crowd;
use crate::bench::report::Row;
use crate::bench::setup::Ctx;

pub struct Params {
    pub region: String,
    pub sessions: usize,
    pub connections: usize,
    /// Members of each group the users are put in.
    pub group_size: usize,
}

pub struct Figures {
    /// Subscriptions held at the end (fewer than asked when one was refused).
    pub held: usize,
    pub baseline_kib: u64,
    pub held_kib: u64,
    pub released_kib: u64,
    pub rows: Vec<Row>,
}

impl Figures {
    pub fn kib_per_subscription(&self) -> f64 {
        self.held_kib.saturating_sub(self.baseline_kib) as f64 / self.held.max(1) as f64
    }
}

/// Subscriptions opened at once.
const IN_FLIGHT: usize = 256;

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Figures> {
    let region = params.region.as_str();
    let users = params.sessions.div_ceil(crowd::PER_USER);
    println!(
        "\n-- idle-sessions: {} idle subscriptions at {region}'s service center: {users} users holding {} each over {} connections, one cursor each (groups of {})",
        params.sessions,
        crowd::PER_USER,
        params.connections,
        params.group_size
    );
    let pid = crowd::pid(&ctx.endpoints, region, "service-center")?;
    let started = crowd::rss_kib(pid).unwrap_or(0);
    let setup = crowd::connections(ctx, region, 4).await?;
    let names = crowd::names(ctx, "idle-u", region, users);
    let registered = crowd::register(&setup, &names).await?;
    let (tokens, logged_in) = crowd::login(&setup, &names).await?;
    let groups = crowd::groups(ctx, &setup, &tokens, "idle-g", params.group_size).await?;
    println!(
        "  {users} users registered in {registered:.1} s and logged in in {logged_in:.1} s (each hashes a password)"
    );
    drop(setup);

    let clients = crowd::connections(ctx, region, params.connections).await?;
    let baseline = crowd::settled_rss_kib(pid).await?;
    println!(
        "  service center (pid {pid}) RSS: {} KiB at the start, {baseline} KiB with the users, sessions and groups (baseline)",
        started
    );

    let mut held = Vec::with_capacity(params.sessions);
    let mut points = vec![(0usize, baseline, 0.0f64)];
    let mut refused = None;
    let step = params.sessions.div_ceil(10).max(1);
    let began = Instant::now();
    while held.len() < params.sessions && refused.is_none() {
        let from = held.len();
        let to = (from + step).min(params.sessions);
        let (streams, failed) = open(&clients, &tokens, &groups, from..to).await;
        held.extend(streams);
        refused = refused.or(failed);
        let seconds = began.elapsed().as_secs_f64();
        let rss = crowd::settled_rss_kib(pid).await?;
        let grown = rss.saturating_sub(baseline);
        println!(
            "    {} subscriptions held after {seconds:.1} s: RSS {rss} KiB, +{grown} KiB over the baseline, {:.2} KiB each",
            held.len(),
            grown as f64 / held.len().max(1) as f64
        );
        points.push((held.len(), rss, seconds));
    }
    let (count, held_kib, _) = *points.last().expect("the baseline at least");
    held.clear();
    // The server ends each subscription once its stream's reset arrives.
    drop(clients);
    let released = crowd::settled_rss_kib(pid).await?;
    // Open a tenth again: if the server ended the others, their memory is
    // reused and RSS hardly moves; if it still held them, it grows again.
    let clients = crowd::connections(ctx, region, params.connections).await?;
    let (again, _) = open(&clients, &tokens, &groups, 0..step.min(count)).await;
    let reopened = crowd::settled_rss_kib(pid).await?;
    let reopened_count = again.len();
    drop(again);
    drop(clients);

    let mut lines = vec![format!(
        "baseline {baseline} KiB (users, sessions, groups, {} connections); held {count}: {held_kib} KiB, +{} KiB, {:.2} KiB per subscription",
        params.connections,
        held_kib.saturating_sub(baseline),
        held_kib.saturating_sub(baseline) as f64 / count.max(1) as f64
    )];
    for pair in points.windows(2) {
        let ((n0, r0, _), (n1, r1, t1)) = (pair[0], pair[1]);
        lines.push(format!(
            "{n0} -> {n1}: +{} KiB, {:.2} KiB per subscription (at {t1:.1} s)",
            r1.saturating_sub(r0),
            r1.saturating_sub(r0) as f64 / (n1 - n0).max(1) as f64
        ));
    }
    lines.push(format!(
        "after every subscription and connection was dropped: {released} KiB (+{} KiB over the baseline, kept by the allocator)",
        released.saturating_sub(baseline)
    ));
    lines.push(format!(
        "{reopened_count} opened again after that: {reopened} KiB ({:+} KiB: {})",
        reopened as i64 - released as i64,
        if reopened.saturating_sub(released) * 4 < held_kib.saturating_sub(baseline) / 10 {
            "the freed memory is reused"
        } else {
            "it grew again: the first ones may still be held"
        }
    ));
    if let Some(reason) = &refused {
        lines.push(format!(
            "stopped at {count} of {}: a subscription was refused ({reason})",
            params.sessions
        ));
    }
    let rows = vec![Row::Text {
        label: format!("service center RSS, {region}"),
        lines,
    }];
    Ok(Figures {
        held: count,
        baseline_kib: baseline,
        held_kib,
        released_kib: released,
        rows,
    })
}

/// How each reading was taken, for the summary.
pub const SETTLE_NOTE: &str =
    "each reading after RSS moved less than 0.5 % over 500 ms (20 s at most)";

/// Opens subscriptions `range` (subscription `i` is user `i / PER_USER`'s,
/// on connection `i % clients.len()`, after seq 0 of the user's group),
/// [`IN_FLIGHT`] at a time; the streams, and the first refusal.
async fn open(
    clients: &[Client],
    tokens: &[String],
    groups: &[String],
    range: std::ops::Range<usize>,
) -> (Vec<Streaming<Event>>, Option<String>) {
    let mut streams = Vec::with_capacity(range.len());
    let mut refused = None;
    let mut opened = futures::stream::iter(range)
        .map(|i| {
            let user = i / crowd::PER_USER;
            let client = crowd::as_session(&clients[i % clients.len()], &tokens[user]);
            let cursor = Cursor {
                group: groups[user].clone(),
                last_seq: 0,
            };
            async move {
                let mut client = client?;
                client
                    .subscribe(vec![cursor])
                    .await
                    .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))
            }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(result) = opened.next().await {
        match result {
            Ok(stream) => streams.push(stream),
            Err(e) if refused.is_none() => refused = Some(format!("{e:#}")),
            Err(_) => {}
        }
    }
    (streams, refused)
}
