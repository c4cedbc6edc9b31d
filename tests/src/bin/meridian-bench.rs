//! `meridian-bench`: measures Meridian running as real processes in local mode
//! and prints latency percentiles and throughput. It is a measurement, not a
//! test: nothing is asserted about speed.
//!
//! Build the system and the benchmark first, then run it:
//!
//! ```text
//! cargo build --release -p meridian-operator -p meridian-node -p meridian-tests
//! target/release/meridian-bench --runs 3
//! ```
//!
//! By default it starts `target/release/meridian-operator local -f
//! examples/three-regions.yaml` in a temporary state directory, waits for its
//! `endpoints.json`, runs the scenarios and stops the operator with SIGTERM.
//! `--endpoints FILE` measures a local mode that is already running instead.
//!
//! Scenarios (`--scenario`):
//! - `ack`: send-ack latency, open loop at `--rate`, to a group homed in the
//!   sender's region and to one homed in another region (whose ack carries
//!   that home's verdict, so it spans the round trip there);
//! - `deliver`: send-to-deliver latency, open loop at `--deliver-rate`, to a
//!   member in the same region and to one in another region;
//! - `throughput`: closed loop with `--concurrency` senders: acks per second
//!   and deliveries per second to one member.
//!
//! Open-loop latencies are measured from each request's intended start time,
//! so a stall counts against every request it delays.

#[path = "../bench/mod.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use bench::local::{Endpoints, LocalMode};
use bench::open_loop::Schedule;
use bench::report::Row;
use bench::setup::{Ctx, prefix};
use bench::{ack, deliver, local, throughput};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Ack,
    Deliver,
    Throughput,
}

/// Measures Meridian in local mode: send-ack latency, send-to-deliver latency
/// and throughput.
#[derive(Debug, Parser)]
#[command(name = "meridian-bench", version)]
struct Args {
    /// Which scenarios to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Repeat every scenario this many times (one system, fresh names per run).
    #[arg(long, default_value_t = 1)]
    runs: usize,

    /// Send-ack scenario: messages per second, open loop.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Send-to-deliver scenario: messages per second, open loop.
    #[arg(long, default_value_t = 1000.0)]
    deliver_rate: f64,
    /// Measured seconds of every scenario.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of load before the measured ones.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Open loop: requests in flight at most (more wait, and are counted).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Throughput scenario: concurrent senders, closed loop.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Throughput scenario: groups the senders are dealt over, all homed
    /// in the measured region.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Connections (HTTP/2 channels) the senders share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Size of each message body in bytes.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Seconds to wait for deliveries after the last send.
    #[arg(long, default_value_t = 5.0)]
    straggler_wait: f64,

    /// The senders' region.
    #[arg(long, default_value = "eu")]
    local: String,
    /// The other region: home of the remote group, and of the cross-region receiver.
    #[arg(long, default_value = "us")]
    remote: String,
    /// Regions whose throughput is measured, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "eu")]
    throughput_regions: Vec<String>,

    /// Measure a local mode that is already running: its endpoints.json.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["operator", "manifest", "state_dir"])]
    endpoints: Option<PathBuf>,
    /// The operator binary [default: <workspace>/target/release/meridian-operator].
    #[arg(long, value_name = "PATH")]
    operator: Option<PathBuf>,
    /// The manifest local mode runs [default: <workspace>/examples/three-regions.yaml].
    #[arg(short = 'f', long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Local mode's state directory [default: a temporary one, removed at the end].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds to wait for local mode to serve every region.
    #[arg(long, default_value_t = 60)]
    start_timeout: u64,
}

impl Args {
    fn wants(&self, scenario: Scenario) -> bool {
        self.scenario == Scenario::All || self.scenario == scenario
    }

    fn schedule(&self, rate: f64) -> Schedule {
        Schedule {
            rate,
            warmup: secs(self.warmup),
            duration: secs(self.duration),
            max_in_flight: self.max_in_flight,
            timeout: Duration::from_secs(10),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.runs >= 1, "--runs must be at least 1");
        anyhow::ensure!(
            self.rate > 0.0 && self.deliver_rate > 0.0,
            "rates must be positive"
        );
        anyhow::ensure!(self.duration > 0.0, "--duration must be positive");
        anyhow::ensure!(self.warmup >= 0.0, "--warmup must not be negative");
        anyhow::ensure!(
            self.straggler_wait >= 0.0,
            "--straggler-wait must not be negative"
        );
        anyhow::ensure!(
            self.max_in_flight >= 1
                && self.concurrency >= 1
                && self.connections >= 1
                && self.groups >= 1,
            "--max-in-flight, --concurrency, --connections and --groups must be at least 1"
        );
        Ok(())
    }
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    args.check()?;
    let (endpoints, local) = match &args.endpoints {
        Some(file) => (Endpoints::load(file)?, None),
        None => {
            let (endpoints, local) = start(&args).await?;
            (endpoints, Some(local))
        }
    };
    for (code, url) in &endpoints.regions {
        println!("region {code}: {url}");
    }

    let result = tokio::select! {
        result = all_runs(&args, &endpoints) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };

    if let Some(local) = local {
        let pid = local.pid();
        match local.stop().await {
            Ok(status) => println!(
                "\nstopped local mode (pid {}): {status}",
                pid.unwrap_or_default()
            ),
            Err(e) => eprintln!("stopping local mode: {e:#}"),
        }
    }
    result
}

/// Spawns local mode and waits until every region serves.
async fn start(args: &Args) -> anyhow::Result<(Endpoints, LocalMode)> {
    let root = workspace_root();
    let operator = operator(args);
    let manifest = args
        .manifest
        .clone()
        .unwrap_or_else(|| root.join("examples/three-regions.yaml"));
    local::start(
        &operator,
        &manifest,
        args.state_dir.as_deref(),
        &[],
        Duration::from_secs(args.start_timeout),
    )
    .await
}

fn operator(args: &Args) -> PathBuf {
    args.operator
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/meridian-operator"))
}

fn throughput_params(args: &Args) -> throughput::Params {
    throughput::Params {
        concurrency: args.concurrency,
        connections: args.connections,
        warmup: secs(args.warmup),
        duration: secs(args.duration),
        body_bytes: args.body_bytes,
        straggler_wait: secs(args.straggler_wait),
        regions: args.throughput_regions.clone(),
        groups: args.groups,
    }
}

async fn all_runs(args: &Args, endpoints: &Endpoints) -> anyhow::Result<()> {
    for region in [&args.local, &args.remote]
        .into_iter()
        .chain(&args.throughput_regions)
    {
        endpoints.client(region)?;
    }
    let mut summaries = Vec::new();
    for run in 1..=args.runs {
        let ctx = Ctx {
            endpoints: endpoints.clone(),
            prefix: prefix(run),
        };
        println!(
            "\n=== run {run} of {} (names prefixed {}) ===",
            args.runs, ctx.prefix
        );
        let rows = one_run(args, &ctx)
            .await
            .with_context(|| format!("run {run}"))?;
        summaries.push(rows);
    }

    println!("\n=== summary ===");
    for (i, rows) in summaries.iter().enumerate() {
        println!("run {}:", i + 1);
        for row in rows {
            row.print();
        }
    }
    Ok(())
}

async fn one_run(args: &Args, ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if args.wants(Scenario::Ack) {
        let params = ack::Params {
            schedule: args.schedule(args.rate),
            connections: args.connections,
            body_bytes: args.body_bytes,
            local: args.local.clone(),
            remote: args.remote.clone(),
        };
        rows.extend(ack::run(ctx, &params).await?);
    }
    if args.wants(Scenario::Deliver) {
        let params = deliver::Params {
            schedule: args.schedule(args.deliver_rate),
            connections: args.connections,
            body_bytes: args.body_bytes,
            straggler_wait: secs(args.straggler_wait),
            local: args.local.clone(),
            remote: args.remote.clone(),
        };
        rows.extend(deliver::run(ctx, &params).await?);
    }
    if args.wants(Scenario::Throughput) {
        rows.extend(throughput::run(ctx, &throughput_params(args)).await?);
    }
    Ok(rows)
}
