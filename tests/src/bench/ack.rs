//! Scenario 1: send-ack latency, open loop. A sender connected at the local
//! region sends to a group homed there, then to a group homed in another
//! region. Either ack carries the home's verdict (its seq): for the remote
//! group it waits for the local durable write, the outbox's trip to the
//! home, the home's sequencing and the reply. A reply that says `queued`
//! (the home did not answer within the server's bound) is counted apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::open_loop::{self, Outcome, Schedule};
use super::report::{Percentiles, Row, notes};
use super::setup::{Ctx, body};

pub struct Params {
    pub schedule: Schedule,
    pub connections: usize,
    pub body_bytes: usize,
    pub local: String,
    pub remote: String,
}

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Vec<Row>> {
    let s = &params.schedule;
    println!(
        "\n-- ack: send-ack latency, open loop at {} msg/s, {} s warm-up + {} s measured, at most {} in flight, {} connections, {} B bodies",
        s.rate,
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        s.max_in_flight,
        params.connections,
        params.body_bytes
    );
    let (local, remote) = (params.local.as_str(), params.remote.as_str());
    let mut sender = ctx.user("ack-s", local, local).await?;
    let local_group = sender.create_group(ctx, "ack-g").await?;
    let mut owner = ctx.user("ack-o", remote, remote).await?;
    let remote_group = owner.create_group(ctx, "ack-r").await?;
    sender.join(&remote_group).await?;
    let pool = sender.pool(params.connections).await?;
    println!(
        "  sender {} at {local}; local group {local_group}, remote group {remote_group}",
        sender.user
    );

    let mut rows = Vec::new();
    for (what, group) in [("local", &local_group), ("remote", &remote_group)] {
        let home = group.rsplit('@').next().unwrap_or_default();
        let label = format!("send-ack, {what} group ({local} -> @{home})");
        let queued = Arc::new(AtomicU64::new(0));
        let outcome = drive(ctx, params, &pool, group, what, &queued).await;
        let mut row = latency_row(label, &outcome);
        let queued = queued.load(Ordering::Relaxed);
        if queued > 0
            && let Row::Latency { note, .. } = &mut row
        {
            let without = std::mem::take(note);
            *note = notes(&[
                without,
                format!("queued (no verdict from the home in time) {queued}"),
            ]);
        }
        row.print();
        rows.push(row);
    }
    Ok(rows)
}

async fn drive(
    ctx: &Ctx,
    params: &Params,
    pool: &[meridian_node::client::Client],
    group: &str,
    what: &str,
    queued: &Arc<AtomicU64>,
) -> Outcome {
    let prefix = ctx.name(&format!("ack-{what}"));
    open_loop::run(&params.schedule, |slot| {
        let mut client = pool[slot.index as usize % pool.len()].clone();
        let group = group.to_owned();
        let key = format!("{prefix}-{}", slot.index);
        let body = body(&key, params.body_bytes);
        let queued = queued.clone();
        async move {
            let reply = client
                .send(&group, &body, &key)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            if reply.queued && slot.measured {
                queued.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await
}

/// The latency row of an open-loop outcome, with the generator's own lag.
pub fn latency_row(label: String, outcome: &Outcome) -> Row {
    let lag = Percentiles::of(&outcome.start_lag);
    let mut parts = vec![format!(
        "issued {}, acked {}; start lag p50 {:.2} p99 {:.2} ms",
        outcome.issued,
        outcome.ok,
        lag.p50 as f64 / 1000.0,
        lag.p99 as f64 / 1000.0
    )];
    parts.extend(outcome.notes());
    Row::Latency {
        label,
        percentiles: Percentiles::of(&outcome.latency),
        note: notes(&parts),
    }
}
