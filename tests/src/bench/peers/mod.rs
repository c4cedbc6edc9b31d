//! The side-by-side scenario (`meridian-bench --scenario peers`, issue 12):
//! the same open-loop workload, cross-region, against NATS core, JetStream
//! and Meridian, interleaved in one run (NATS, JetStream, Meridian, NATS,
//! …) so that the shared machine's drift hits all three alike.
//!
//! Each system gets messages of the same size at the same rate from the
//! same pacer ([`open_loop`](super::open_loop)), the sender in one region
//! or cluster and the receiver in another, and each message's latency is
//! taken from its intended send time, carried in its body. Meridian's
//! round is the cross-region route of the `deliver` scenario (send to a
//! group homed at the sender's region, a member subscribed at another).
//! NATS runs as a gateway supercluster of its own ([`servers`]).

pub mod nats;
pub mod servers;
pub mod summary;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::deliver;
use super::local::Endpoints;
use super::setup::{Ctx, prefix};
use servers::Supercluster;
use summary::{Round, Summary, System};

pub struct Params {
    pub nats_server: PathBuf,
    /// The NATS rounds' workload; its schedule is Meridian's too.
    pub nats: nats::Params,
    /// Meridian's round: the cross-region route of these.
    pub meridian: deliver::Params,
    pub runs: usize,
    /// How long the NATS servers may take to be ready.
    pub start_timeout: Duration,
    /// Where to write the JSON summary.
    pub json: Option<PathBuf>,
}

pub async fn run(params: &Params, endpoints: &Endpoints) -> anyhow::Result<()> {
    let s = &params.nats.schedule;
    println!(
        "\n-- peers: cross-region delivery, NATS core / JetStream / Meridian interleaved, \
         open loop at {} msg/s, {} s warm-up + {} s measured per round, {} B bodies, \
         at most {} in flight, {} s for stragglers, {} runs",
        s.rate,
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        params.nats.body_bytes,
        s.max_in_flight,
        params.nats.straggler_wait.as_secs_f64(),
        params.runs
    );
    let version = std::process::Command::new(&params.nats_server)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cluster = Supercluster::start(&params.nats_server, params.start_timeout).await?;
    println!(
        "started {} ({version}): {} in {}, pids {:?}",
        params.nats_server.display(),
        (0..3).map(|i| cluster.url(i)).collect::<Vec<_>>().join(" "),
        cluster.dir.path().display(),
        cluster.pids()
    );
    let clients = nats::Clients::connect(&cluster).await?;

    let mut summary = Summary::default();
    for run in 1..=params.runs {
        println!("\n=== run {run} of {} ===", params.runs);
        let mut rounds = Vec::new();
        for system in System::ALL {
            let round = match system {
                System::Nats => nats::core(&clients, &params.nats, run).await,
                System::JetStream => nats::jetstream(&clients, &params.nats, run).await,
                System::Meridian => meridian(endpoints, &params.meridian, run).await,
            }
            .with_context(|| format!("run {run}, {}", system.label()))?;
            println!("  {:<10} {}", system.label(), round.line());
            rounds.push((system, round));
        }
        summary.runs.push(rounds);
    }

    println!(
        "\n=== summary: cross-region delivery, ms from the intended send time ({} msg/s, {} B, {} s per run) ===\n",
        s.rate,
        params.nats.body_bytes,
        s.duration.as_secs_f64()
    );
    print!("{}", summary.table());
    if let Some(path) = &params.json {
        let settings = json!({
            "rate_per_s": s.rate,
            "warmup_s": s.warmup.as_secs_f64(),
            "seconds_per_run": s.duration.as_secs_f64(),
            "body_bytes": params.nats.body_bytes,
            "runs": params.runs,
            "nats_server": version,
            "meridian_route": format!("{} -> home {} -> member at {}",
                params.meridian.local, params.meridian.local, params.meridian.remote),
            "jetstream_consumer": "push, ack none, stream on C0 (file, sync_interval always), read on C1",
        });
        summary::write_atomically(path, &summary.json(settings))?;
        println!("\nwrote {}", path.display());
    }
    drop(clients);
    drop(cluster);
    Ok(())
}

/// Meridian's round: fresh users and group (names prefixed per run).
async fn meridian(
    endpoints: &Endpoints,
    params: &deliver::Params,
    run: usize,
) -> anyhow::Result<Round> {
    let ctx = Ctx {
        endpoints: endpoints.clone(),
        prefix: prefix(run),
    };
    let measured = deliver::cross_region(&ctx, params).await?;
    let note = match &measured.deliver_row {
        super::report::Row::Latency { note, .. } => note.clone(),
        _ => String::new(),
    };
    Ok(Round {
        latency: measured.latency,
        lag: measured.start_lag,
        sent: measured.acked,
        missing: measured.missing,
        note,
    })
}
