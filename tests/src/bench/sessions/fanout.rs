//! Scenario `fanout`: one group of `members` members, every one subscribed
//! at the group's home region on a connection of its own, and a sender in
//! that region sending to it, closed loop (`senders` at once) or open loop
//! (`rate` sends per second). Counted over the measured window: deliveries
//! per second summed over the members, and the CPU the region's service
//! center spent per delivery (from `/proc`, [`crate::bench::cpu`]). Each
//! body starts with its send time (µs, wall clock; the intended one in open
//! loop), so every delivery also gives a send-to-deliver latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::crowd;
use crate::bench::closed_loop::{self, Phases};
use crate::bench::cpu::Usage;
use crate::bench::open_loop::{self, Schedule};
use crate::bench::report::{
    Errors, Percentiles, Row, histogram, notes, record_micros, wall_micros,
};
use crate::bench::setup::{Ctx, body};
use crate::bench::subscriber::{self, Subscription};

pub struct Params {
    pub region: String,
    pub members: usize,
    /// Closed loop: concurrent senders.
    pub senders: usize,
    /// Open loop instead: sends per second.
    pub rate: Option<f64>,
    pub max_in_flight: usize,
    /// Connections the sends go over.
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub body_bytes: usize,
    pub straggler_wait: Duration,
}

/// One run's figures, for the summary.
pub struct Figures {
    pub sends_per_second: f64,
    pub deliveries_per_second: f64,
    /// The service center's CPU over the window per delivery in it, µs.
    pub center_us_per_delivery: f64,
    /// Every server process's (all regions), µs.
    pub servers_us_per_delivery: f64,
    pub center_cores: f64,
    pub deliver: Percentiles,
    pub rows: Vec<Row>,
}

/// What one member's subscription counts.
struct Member {
    total: AtomicU64,
    in_window: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    malformed: AtomicU64,
}

pub async fn run(ctx: &Ctx, params: &Params) -> anyhow::Result<Figures> {
    let region = params.region.as_str();
    let mode = match params.rate {
        Some(rate) => format!(
            "open loop at {rate} sends/s (at most {} in flight)",
            params.max_in_flight
        ),
        None => format!("closed loop, {} concurrent senders", params.senders),
    };
    println!(
        "\n-- fanout: one group of {} members, all subscribed at {region}, sender at {region}; {mode} over {} connections; {} s warm-up + {} s measured, {} B bodies",
        params.members,
        params.connections,
        params.warmup.as_secs_f64(),
        params.duration.as_secs_f64(),
        params.body_bytes
    );
    let mut sender = ctx.user("fan-s", region, region).await?;
    let group = sender.create_group(ctx, "fan").await?;
    let setup = crowd::connections(ctx, region, 4).await?;
    let names = crowd::names(ctx, "fan-m", region, params.members);
    crowd::register(&setup, &names).await?;
    let (tokens, _) = crowd::login(&setup, &names).await?;
    for (i, token) in tokens.iter().enumerate() {
        let mut member = crowd::as_session(&setup[i % setup.len()], token)?;
        member
            .join(&group)
            .await
            .map_err(|s| anyhow::anyhow!("{} joins {group}: {}", names[i], s.message()))?;
    }

    let phases = Phases::new(params.warmup, params.duration);
    let mut members = Vec::with_capacity(tokens.len());
    let mut subscriptions: Vec<Subscription> = Vec::with_capacity(tokens.len());
    for token in &tokens {
        // A connection of its own, as a member's device would have.
        let client = crowd::as_session(&ctx.connect(region).await?, token)?;
        let member = Arc::new(Member {
            total: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            malformed: AtomicU64::new(0),
        });
        let counts = member.clone();
        subscriptions.push(
            subscriber::subscribe(client, group.clone(), 0, move |d, now| {
                counts.total.fetch_add(1, Ordering::Relaxed);
                if !phases.measures(Instant::now()) {
                    return;
                }
                counts.in_window.fetch_add(1, Ordering::Relaxed);
                match d.body.split(' ').next().and_then(|h| h.parse::<u64>().ok()) {
                    Some(sent) => record_micros(
                        &mut counts.latency.lock().expect("latency"),
                        now.saturating_sub(sent),
                    ),
                    None => {
                        counts.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .await?,
        );
        members.push(member);
    }
    println!(
        "  group {group}: {} members subscribed, sender {}",
        members.len(),
        sender.user
    );

    let probe = crowd::probe(&ctx.endpoints, region)?;
    let cpu = phases.cpu(probe);

    let pool = sender.pool(params.connections).await?;
    let prefix = ctx.name("fan");
    let sent = match params.rate {
        None => closed(params, phases, &pool, &group, &prefix).await?,
        Some(rate) => {
            tokio::time::sleep_until(phases.start).await;
            let schedule = Schedule {
                rate,
                warmup: params.warmup,
                duration: params.duration,
                max_in_flight: params.max_in_flight,
                timeout: Duration::from_secs(10),
            };
            open(params, &schedule, &pool, &group, &prefix).await
        }
    };

    // Every member gets every acked send (one delivery each).
    let want = sent.acked_total;
    let caught_up = phases
        .catch_up(params.straggler_wait, || {
            members
                .iter()
                .all(|m| m.total.load(Ordering::Relaxed) >= want)
        })
        .await;
    let usage = cpu.await?;
    let mut resumes = 0;
    let mut stale = 0;
    let mut sub_errors = Errors::default();
    for s in &subscriptions {
        resumes += s.stats.resumes.load(Ordering::Relaxed);
        stale += s.stats.stale.load(Ordering::Relaxed);
        sub_errors.merge(std::mem::take(&mut *s.stats.errors.lock().expect("errors")));
    }
    drop(subscriptions);
    Ok(figures(
        params,
        &members,
        &sent,
        &usage,
        caught_up,
        (resumes, stale, sub_errors),
    ))
}

/// What the senders did.
struct Sent {
    acked_total: u64,
    acked_in_window: u64,
    latency: Histogram<u64>,
    notes: Vec<String>,
}

async fn closed(
    params: &Params,
    phases: Phases,
    pool: &[meridian_node::client::Client],
    group: &str,
    prefix: &str,
) -> anyhow::Result<Sent> {
    let bytes = params.body_bytes;
    let tally = closed_loop::send(
        phases,
        pool,
        &[group.to_owned()],
        params.senders,
        prefix,
        move || body(&wall_micros().to_string(), bytes),
    )
    .await?;
    Ok(Sent {
        acked_total: tally.acked_total,
        acked_in_window: tally.acked_in_window,
        latency: tally.latency,
        notes: vec![tally.errors.describe()],
    })
}

async fn open(
    params: &Params,
    schedule: &Schedule,
    pool: &[meridian_node::client::Client],
    group: &str,
    prefix: &str,
) -> Sent {
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    let outcome = open_loop::run(schedule, |slot| {
        let mut client = pool[slot.index as usize % pool.len()].clone();
        let group = group.to_owned();
        let body = body(&slot.intended_wall_micros.to_string(), params.body_bytes);
        let key = format!("{prefix}-{}", slot.index);
        let acked = counter.clone();
        async move {
            client
                .send(&group, &body, &key)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            acked.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
    .await;
    let mut notes = outcome.notes();
    notes.push(format!(
        "the generator's own lateness p99 {:.2} ms",
        Percentiles::of(&outcome.start_lag).p99 as f64 / 1000.0
    ));
    Sent {
        acked_total: acked.load(Ordering::Relaxed),
        acked_in_window: outcome.ok,
        latency: outcome.latency,
        notes,
    }
}

fn figures(
    params: &Params,
    members: &[Arc<Member>],
    sent: &Sent,
    usage: &Usage,
    caught_up: Option<Duration>,
    (resumes, stale, sub_errors): (u64, u64, Errors),
) -> Figures {
    let seconds = params.duration.as_secs_f64();
    let region = &params.region;
    let in_window: Vec<u64> = members
        .iter()
        .map(|m| m.in_window.load(Ordering::Relaxed))
        .collect();
    let delivered: u64 = in_window.iter().sum();
    let mut latency = histogram();
    for m in members {
        latency
            .add(&*m.latency.lock().expect("latency"))
            .expect("same bounds");
    }
    let malformed: u64 = members
        .iter()
        .map(|m| m.malformed.load(Ordering::Relaxed))
        .sum();
    let totals: Vec<u64> = members
        .iter()
        .map(|m| m.total.load(Ordering::Relaxed))
        .collect();
    let missing: u64 = totals
        .iter()
        .map(|t| sent.acked_total.saturating_sub(*t))
        .sum();

    let cpu = |label: &str| {
        usage
            .groups
            .iter()
            .filter(|(l, _)| l.as_str() == label)
            .map(|(_, c)| c)
            .sum::<f64>()
    };
    let center = cpu(&format!("{region} service center"));
    let servers =
        center + cpu(&format!("{region} roaming system")) + cpu("the other regions' processes");
    let per = |cpu: f64| {
        if delivered == 0 {
            f64::NAN
        } else {
            cpu / delivered as f64 * 1e6
        }
    };

    let mut send_notes = vec![format!(
        "acked {} in {seconds} s ({} in all)",
        sent.acked_in_window, sent.acked_total
    )];
    send_notes.extend(sent.notes.iter().cloned());
    let mut deliver_notes = vec![format!(
        "{delivered} in {seconds} s over {} members (each {}..{})",
        members.len(),
        in_window.iter().min().copied().unwrap_or(0),
        in_window.iter().max().copied().unwrap_or(0)
    )];
    deliver_notes.push(match caught_up {
        Some(after) => format!(
            "all caught up {:.0} ms after the senders stopped",
            after.as_secs_f64() * 1000.0
        ),
        None => format!(
            "missing {missing} deliveries after waiting {} s",
            params.straggler_wait.as_secs_f64()
        ),
    });
    if resumes > 0 {
        deliver_notes.push(format!("subscriptions cut off and resumed {resumes}x"));
    }
    if stale > 0 {
        deliver_notes.push(format!("stale deliveries dropped {stale}"));
    }
    deliver_notes.push(sub_errors.describe());
    if malformed > 0 {
        deliver_notes.push(format!("bodies without a send time {malformed}"));
    }
    let mut cpu_lines: Vec<String> = usage
        .groups
        .iter()
        .map(|(label, cpu)| {
            format!(
                "{label}: {:.2} cores ({cpu:.2} s CPU in {:.1} s), {:.2} µs per delivery",
                cpu / usage.seconds.max(1e-9),
                usage.seconds,
                per(*cpu)
            )
        })
        .collect();
    cpu_lines.push(format!(
        "server processes (all regions): {:.2} µs per delivery; the service center {:.2} µs per delivery, {:.1} µs per acked send",
        per(servers),
        per(center),
        if sent.acked_in_window == 0 {
            f64::NAN
        } else {
            center / sent.acked_in_window as f64 * 1e6
        }
    ));
    if let Some(machine) = usage.machine_cores {
        cpu_lines.push(format!(
            "the whole machine (every user's processes): {machine:.2} of {} cores busy",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
    }
    let deliver = Percentiles::of(&latency);
    let rows = vec![
        Row::Rate {
            label: format!("fan-out sends acked, {region}"),
            per_second: sent.acked_in_window as f64 / seconds,
            note: notes(&send_notes),
        },
        Row::Rate {
            label: format!("fan-out deliveries, {region}"),
            per_second: delivered as f64 / seconds,
            note: notes(&deliver_notes),
        },
        Row::Latency {
            label: "fan-out send-ack".into(),
            percentiles: Percentiles::of(&sent.latency),
            note: String::new(),
        },
        Row::Latency {
            label: "fan-out send-to-deliver".into(),
            percentiles: deliver,
            note: String::new(),
        },
        Row::Text {
            label: "CPU over the measured window".into(),
            lines: cpu_lines,
        },
    ];
    Figures {
        sends_per_second: sent.acked_in_window as f64 / seconds,
        deliveries_per_second: delivered as f64 / seconds,
        center_us_per_delivery: per(center),
        servers_us_per_delivery: per(servers),
        center_cores: center / usage.seconds.max(1e-9),
        deliver,
        rows,
    }
}
