//! `--scenario path`: where the time of a cross-region delivery goes.
//!
//! Local mode runs with every node exporting its spans over OTLP to a
//! collector in this process (`collector`); the `deliver` scenario's
//! cross-region route runs open loop; then each measured message's spans
//! are matched to its receipt and its latency is cut into the stretches
//! between its hops (`breakdown`). Tracing costs the nodes some CPU, so
//! the latencies here run a little above `--scenario peers`'s: read the
//! shares, not the absolute figures.

pub mod breakdown;
pub mod collector;

use std::time::Duration;

use super::deliver;
use super::local;
use super::setup::{Ctx, prefix};

pub struct Params {
    pub deliver: deliver::Params,
    pub runs: usize,
    pub operator: std::path::PathBuf,
    pub manifest: std::path::PathBuf,
    pub start_timeout: Duration,
    /// How long to wait for the last spans to be exported.
    pub span_wait: Duration,
    pub home: Home,
}

/// Where the measured group is homed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Home {
    /// Where the sender is: the peers scenario's route.
    Sender,
    /// Where the receiver is: each send is acknowledged with the home's
    /// verdict, which comes back with the carry's reply.
    Receiver,
}

/// The nodes' batch span processor: exports often, and queues enough
/// that none is dropped at the bench's rates (the default queue is 2,048).
const EXPORT_ENV: [(&str, &str); 3] = [
    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "262144"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096"),
];

pub async fn run(params: &Params) -> anyhow::Result<()> {
    let collector = collector::Collector::start().await?;
    let mut env: Vec<(String, String)> = EXPORT_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
        collector.endpoint.clone(),
    ));
    let (endpoints, local_mode) = local::start_with_env(
        &params.operator,
        &params.manifest,
        None,
        &[],
        &env,
        params.start_timeout,
    )
    .await?;
    let result = runs(params, &collector, &endpoints).await;
    local_mode.stop().await?;
    result
}

async fn runs(
    params: &Params,
    collector: &collector::Collector,
    endpoints: &local::Endpoints,
) -> anyhow::Result<()> {
    let d = &params.deliver;
    let mut all: Option<breakdown::Breakdown> = None;
    for run in 1..=params.runs {
        let ctx = Ctx {
            endpoints: endpoints.clone(),
            prefix: prefix(run),
        };
        println!("\n=== run {run} of {} ===", params.runs);
        let measured = match params.home {
            Home::Sender => deliver::cross_region(&ctx, d).await?,
            Home::Receiver => deliver::cross_region_homed_there(&ctx, d).await?,
        };
        measured.send_row.print();
        measured.deliver_row.print();
        let take = || {
            collector.with_spans(|spans| {
                breakdown::of(
                    spans,
                    &measured.group,
                    &d.local,
                    &d.remote,
                    &measured.receipts,
                )
            })
        };
        let (b, waited) = wait_for(params.span_wait, take).await;
        let dropped = collector.dropped();
        if dropped > 0 {
            println!("  the collector dropped {dropped} spans over its bound");
        }
        let home = match params.home {
            Home::Sender => &d.local,
            Home::Receiver => &d.remote,
        };
        b.print(&format!(
            "run {run}: {} -> @{home} -> {}, {} msg/s (waited {:.1} s for the spans)",
            d.local,
            d.remote,
            d.schedule.rate,
            waited.as_secs_f64()
        ));
        match &mut all {
            Some(total) => total.merge(&b),
            None => all = Some(b),
        }
    }
    if let Some(all) = all
        && params.runs > 1
    {
        all.print(&format!("all {} runs", params.runs));
    }
    Ok(())
}

/// Spans reach the collector in batches, a little after the messages:
/// takes `breakdown` again until every receipt's spans are in, or
/// `deadline` has passed; returns the last, and how long it waited.
async fn wait_for(
    deadline: Duration,
    breakdown: impl Fn() -> breakdown::Breakdown,
) -> (breakdown::Breakdown, Duration) {
    let started = tokio::time::Instant::now();
    loop {
        let b = breakdown();
        if b.unmatched == 0 || started.elapsed() >= deadline {
            return (b, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
