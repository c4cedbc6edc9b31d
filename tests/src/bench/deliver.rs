//! Scenario 2: send-to-deliver latency. A sender at the local region sends,
//! open loop, to a group homed there; one member subscribes, either in the
//! same region or in another one. Each body starts with its intended send
//! time (wall clock, µs) and the receiver measures against its wall clock on
//! receipt (same machine, so the clocks agree). Latency therefore includes
//! any lateness of the generator, like the ack scenario.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use meridian_node::client::Client;
use tokio::time::Instant;

use super::ack::latency_row;
use super::open_loop::{self, Schedule};
use super::report::{Percentiles, Row, histogram, notes, record_micros};
use super::setup::{Ctx, Session, body};
use super::subscriber;

pub struct Params {
    pub schedule: Schedule,
    pub connections: usize,
    pub body_bytes: usize,
    /// How long to wait for deliveries after the last ack.
    pub straggler_wait: Duration,
    pub local: String,
    pub remote: String,
}

/// What the receiver saw.
struct Received {
    latency: Histogram<u64>,
    /// Measured indices delivered.
    seen: HashSet<u64>,
    /// Deliveries of one index under two `seq`s (a resend became a second message).
    repeated: u64,
    malformed: u64,
    receipts: Vec<Receipt>,
}

/// One measured message's delivery, for matching with the spans the nodes
/// export (`bench::path`).
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    pub seq: u64,
    /// When the message was meant to be sent, wall clock.
    pub intended_micros: u64,
    /// When the receiver had it, wall clock.
    pub received_micros: u64,
}

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Vec<Row>> {
    let s = &params.schedule;
    println!(
        "\n-- deliver: send-to-deliver latency, open loop at {} msg/s, {} s warm-up + {} s measured, at most {} in flight, {} connections, {} B bodies, {} s for stragglers",
        s.rate,
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        s.max_in_flight,
        params.connections,
        params.body_bytes,
        params.straggler_wait.as_secs_f64()
    );
    let (local, remote) = (params.local.as_str(), params.remote.as_str());
    let mut sender = ctx.user("dlv-s", local, local).await?;
    let pool = sender.pool(params.connections).await?;
    let mut rows = Vec::new();
    for (what, receiver_region) in [("local", local), ("cross", remote)] {
        let measured = route(ctx, params, &mut sender, &pool, what, receiver_region).await?;
        measured.send_row.print();
        measured.deliver_row.print();
        rows.push(measured.send_row);
        rows.push(measured.deliver_row);
    }
    Ok(rows)
}

/// Only the cross-region route (`local` -> home `local` -> a member at
/// `remote`), with its histograms: the side-by-side scenario (`peers`)
/// merges them over its runs.
pub async fn cross_region(ctx: &Ctx, params: &Params) -> anyhow::Result<Measured> {
    let (local, remote) = (params.local.as_str(), params.remote.as_str());
    let mut sender = ctx.user("dlv-s", local, local).await?;
    let pool = sender.pool(params.connections).await?;
    route(ctx, params, &mut sender, &pool, "cross", remote).await
}

/// As [`cross_region`], with the group homed where the receiver is: the
/// sender's service center carries each message to the home, and its
/// `Send` is acknowledged with the home's verdict.
pub async fn cross_region_homed_there(ctx: &Ctx, params: &Params) -> anyhow::Result<Measured> {
    let (local, remote) = (params.local.as_str(), params.remote.as_str());
    let mut sender = ctx.user("dlv-s", local, local).await?;
    let pool = sender.pool(params.connections).await?;
    let mut receiver = ctx.user("dlv-there-r", remote, remote).await?;
    let group = receiver.create_group(ctx, "dlv-there").await?;
    sender.join(&group).await?;
    println!(
        "  there: sender {} at {local}, group {group}, receiver {} at {remote}",
        sender.user, receiver.user
    );
    let route = format!("there ({local} -> @{remote} -> {remote})");
    measure(ctx, params, &pool, receiver.client, &group, &route).await
}

/// One route's measurement.
pub struct Measured {
    pub send_row: Row,
    pub deliver_row: Row,
    /// Intended send time to delivery, of the measured messages delivered.
    pub latency: Histogram<u64>,
    /// The load generator's own lateness: intended to actual send.
    pub start_lag: Histogram<u64>,
    /// Measured sends acknowledged.
    pub acked: u64,
    /// Acknowledged measured sends never delivered.
    pub missing: u64,
    /// The group the messages went to.
    pub group: String,
    /// Each measured message delivered, first delivery only.
    pub receipts: Vec<Receipt>,
}

/// A new group of `sender`'s with a member at `receiver_region`, measured.
async fn route(
    ctx: &Ctx,
    params: &Params,
    sender: &mut Session,
    pool: &[Client],
    what: &str,
    receiver_region: &str,
) -> anyhow::Result<Measured> {
    let local = params.local.as_str();
    let group = sender.create_group(ctx, &format!("dlv-{what}")).await?;
    let mut receiver = ctx
        .user(&format!("dlv-{what}-r"), receiver_region, receiver_region)
        .await?;
    receiver.join(&group).await?;
    println!(
        "  {what}: sender {} at {local}, group {group}, receiver {} at {receiver_region}",
        sender.user, receiver.user
    );
    let route = format!("{what} ({local} -> @{local} -> {receiver_region})");
    measure(ctx, params, pool, receiver.client, &group, &route).await
}

async fn measure(
    ctx: &Ctx,
    params: &Params,
    pool: &[Client],
    receiver: Client,
    group: &str,
    route: &str,
) -> anyhow::Result<Measured> {
    let received = Arc::new(Mutex::new(Received {
        latency: histogram(),
        seen: HashSet::new(),
        repeated: 0,
        malformed: 0,
        receipts: Vec::new(),
    }));
    let sink = received.clone();
    let subscription = subscriber::subscribe(receiver, group.to_owned(), 0, move |d, now| {
        let mut r = sink.lock().expect("received");
        match parse(&d.body) {
            Some((sent, true, index)) => {
                if r.seen.insert(index) {
                    record_micros(&mut r.latency, now.saturating_sub(sent));
                    r.receipts.push(Receipt {
                        seq: d.seq,
                        intended_micros: sent,
                        received_micros: now,
                    });
                } else {
                    r.repeated += 1;
                }
            }
            Some((_, false, _)) => {}
            None => r.malformed += 1,
        }
    })
    .await?;

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let prefix = ctx.name(&format!("dlv-{}", group.split('@').next().unwrap_or("")));
    let outcome = open_loop::run(&params.schedule, |slot| {
        let mut client = pool[slot.index as usize % pool.len()].clone();
        let group = group.to_owned();
        let phase = if slot.measured { 'm' } else { 'w' };
        let head = format!("{} {phase} {}", slot.intended_wall_micros, slot.index);
        let body = body(&head, params.body_bytes);
        let key = format!("{prefix}-{}", slot.index);
        let acked = acked.clone();
        async move {
            client
                .send(&group, &body, &key)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            if slot.measured {
                acked.lock().expect("acked").insert(slot.index);
            }
            Ok(())
        }
    })
    .await;

    // Wait for the stragglers: every acked measured message delivered.
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    let deadline = Instant::now() + params.straggler_wait;
    let started_waiting = Instant::now();
    loop {
        let done = {
            let r = received.lock().expect("received");
            acked.iter().all(|i| r.seen.contains(i))
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = started_waiting.elapsed();
    let stats = subscription.stats.clone();
    drop(subscription);

    let r = received.lock().expect("received");
    let missing = acked.iter().filter(|i| !r.seen.contains(i)).count();
    let unacked_delivered = r.seen.iter().filter(|i| !acked.contains(i)).count();
    let send_row = latency_row(format!("  its send-ack, {route}"), &outcome);
    let mut parts = vec![
        format!(
            "acked {}, delivered {}, missing {missing}",
            acked.len(),
            r.seen.len()
        ),
        format!(
            "waited {:.0} ms after the last ack",
            waited.as_secs_f64() * 1000.0
        ),
    ];
    if unacked_delivered > 0 {
        parts.push(format!(
            "delivered though the send failed {unacked_delivered}"
        ));
    }
    if r.repeated > 0 {
        parts.push(format!("same message under two seqs {}", r.repeated));
    }
    if r.malformed > 0 {
        parts.push(format!("malformed bodies {}", r.malformed));
    }
    parts.extend(stats.notes());
    let deliver_row = Row::Latency {
        label: format!("deliver, {route}"),
        percentiles: Percentiles::of(&r.latency),
        note: notes(&parts),
    };
    Ok(Measured {
        send_row,
        deliver_row,
        latency: r.latency.clone(),
        start_lag: outcome.start_lag,
        acked: acked.len() as u64,
        missing: missing as u64,
        group: group.to_owned(),
        receipts: r.receipts.clone(),
    })
}

/// `<intended µs> <m|w> <index> …` → (intended µs, measured, index).
pub fn parse(body: &str) -> Option<(u64, bool, u64)> {
    let mut words = body.split(' ');
    let sent = words.next()?.parse().ok()?;
    let measured = match words.next()? {
        "m" => true,
        "w" => false,
        _ => return None,
    };
    let index = words.next()?.parse().ok()?;
    Some((sent, measured, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_send_time_and_index() {
        let b = body("1700000000000000 m 42", 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse(&b), Some((1_700_000_000_000_000, true, 42)));
        assert_eq!(parse("1 w 3"), Some((1, false, 3)));
        assert_eq!(parse("hello"), None);
    }
}
