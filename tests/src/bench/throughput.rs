//! Scenario 3: throughput of one region. Closed loop: `concurrency` senders
//! spread over a few connections each send to a group homed in the region,
//! the next send as soon as the previous one is acked. Counted: acks per
//! second (durably accepted sends) and deliveries per second seen by one
//! member's subscription in the same region, both over the measured window.
//! A region with several service-center replicas gets its connections dealt
//! over all of them (endpoints.json's `clients`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::closed_loop::{self, Phases, Tally};
use super::cpu::{Probe, Usage};
use super::report::{Percentiles, Row, notes};
use super::setup::{Ctx, body};
use super::subscriber;

pub struct Params {
    pub concurrency: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub body_bytes: usize,
    /// How long the subscriber may take to catch up after the senders stop.
    pub straggler_wait: Duration,
    pub regions: Vec<String>,
    /// Groups the senders are dealt over (sender `i` sends to group
    /// `i % groups`), all homed in the region, the member in each.
    pub groups: usize,
}

/// One region's figures, for a caller that tabulates them.
pub struct Measured {
    pub rows: Vec<Row>,
    pub acked_per_second: f64,
    /// Acked over the whole run, warm-up included.
    pub acked_total: u64,
    pub latency: Percentiles,
    /// CPU over the measured window, when a probe was given.
    pub usage: Option<Usage>,
}

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Vec<Row>> {
    println!(
        "\n-- throughput: closed loop, {} concurrent senders over {} connections and {} group(s), {} s warm-up + {} s measured, {} B bodies, one subscribing member",
        params.concurrency,
        params.connections,
        params.groups,
        params.warmup.as_secs_f64(),
        params.duration.as_secs_f64(),
        params.body_bytes
    );
    let mut rows = Vec::new();
    for region in &params.regions {
        for row in run_region(ctx, params, region, None).await?.rows {
            row.print();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Measures `region`; with a `probe`, also the CPU its groups of processes
/// spent over the measured window.
pub async fn run_region(
    ctx: &Ctx,
    params: &Params,
    region: &str,
    probe: Option<Probe>,
) -> anyhow::Result<Measured> {
    let mut sender = ctx
        .user(&format!("tput-{region}-s"), region, region)
        .await?;
    let mut groups = Vec::with_capacity(params.groups);
    for g in 0..params.groups.max(1) {
        let role = match g {
            0 => format!("tput-{region}"),
            g => format!("tput-{region}-{g}"),
        };
        groups.push(sender.create_group(ctx, &role).await?);
    }
    let mut member = ctx
        .user(&format!("tput-{region}-m"), region, region)
        .await?;
    for group in &groups {
        member.join(group).await?;
    }
    let replicas = ctx.endpoints.clients(region)?;
    let pool = sender.pool_over(replicas, params.connections).await?;

    let phases = Phases::new(params.warmup, params.duration);

    // The member counts what reaches it, and when.
    let delivered_total = Arc::new(AtomicU64::new(0));
    let delivered_in_window = Arc::new(AtomicU64::new(0));
    let (total, in_window) = (delivered_total.clone(), delivered_in_window.clone());
    let cursors = groups.iter().map(|g| (g.clone(), 0)).collect();
    let subscription = subscriber::subscribe_all(member.client, cursors, move |_, _| {
        let now = Instant::now();
        total.fetch_add(1, Ordering::Relaxed);
        if phases.measures(now) {
            in_window.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await?;

    let cpu = probe.map(|probe| phases.cpu(probe));

    let prefix = ctx.name(&format!("tput-{region}"));
    let body: Arc<str> = body(&prefix, params.body_bytes).into();
    let Tally {
        acked_total,
        acked_in_window,
        latency,
        errors,
    } = closed_loop::send(
        phases,
        &pool,
        &groups,
        params.concurrency,
        &prefix,
        move || body.clone(),
    )
    .await?;

    // Let the member catch up with everything acked.
    let caught_up = phases
        .catch_up(params.straggler_wait, || {
            delivered_total.load(Ordering::Relaxed) >= acked_total
        })
        .await;
    let stats = subscription.stats.clone();
    drop(subscription);
    let usage = match cpu {
        Some(task) => Some(task.await?),
        None => None,
    };

    let seconds = params.duration.as_secs_f64();
    let delivered = delivered_total.load(Ordering::Relaxed);
    let mut send_notes = vec![format!(
        "acked {acked_in_window} in {seconds} s ({acked_total} in all)"
    )];
    send_notes.push(errors.describe());
    let mut deliver_notes = vec![format!(
        "delivered {} in {seconds} s ({delivered} of {acked_total} in all)",
        delivered_in_window.load(Ordering::Relaxed)
    )];
    deliver_notes.push(match caught_up {
        Some(after) => format!(
            "caught up {:.0} ms after the senders stopped",
            after.as_secs_f64() * 1000.0
        ),
        None => format!(
            "missing {} after waiting {} s",
            acked_total.saturating_sub(delivered),
            params.straggler_wait.as_secs_f64()
        ),
    });
    deliver_notes.extend(stats.notes());
    let per_second = acked_in_window as f64 / seconds;
    let percentiles = Percentiles::of(&latency);
    let mut rows = vec![
        Row::Rate {
            label: format!("sends acked, region {region}"),
            per_second,
            note: notes(&send_notes),
        },
        Row::Rate {
            label: format!("deliveries to 1 member, {region}"),
            per_second: delivered_in_window.load(Ordering::Relaxed) as f64 / seconds,
            note: notes(&deliver_notes),
        },
        Row::Latency {
            label: format!("closed-loop send-ack, {region}"),
            percentiles,
            note: String::new(),
        },
    ];
    if let Some(usage) = &usage {
        rows.push(Row::Text {
            label: format!("CPU over the measured window, {region}"),
            lines: usage.lines(acked_in_window),
        });
    }
    Ok(Measured {
        rows,
        acked_per_second: per_second,
        acked_total,
        latency: percentiles,
        usage,
    })
}
