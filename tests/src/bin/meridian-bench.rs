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
//!   and deliveries per second to one member;
//! - `failover` (not in `all`): `--local`'s service center on PostgreSQL
//!   with two replicas, a client sending open loop at `--failover-rate`
//!   through one of them, and the replica it uses killed (`kill -9`)
//!   `--kills` times: the time until another replica serves it, the gap
//!   between acks, the retried sends, and the group's history checked;
//! - `backends` (not in `all`): `throughput` on SQLite, then on PostgreSQL
//!   with one and with two service-center replicas, each a fresh local mode,
//!   `--runs` times, with each process's CPU and the flushes;
//! - `peers` (not in `all`): side by side with NATS (issue 12). The same
//!   open-loop workload (`--peers-rate` msg/s of `--peers-body-bytes` B for
//!   `--peers-seconds` per round, sender in one region, receiver in
//!   another) against NATS core, JetStream and Meridian's cross-region
//!   send-to-deliver, interleaved `--runs` times, on a gateway supercluster
//!   of three `nats-server`s it starts itself (`--nats-server`); a table of
//!   p50/p99/p99.9 with the Meridian / NATS ratios, and `--json FILE`.
//!   `benches/peers/run` installs nats-server v2.15.2 (cached under
//!   `~/.cache/meridian/peers`), builds, and runs it:
//!
//!   ```text
//!   benches/peers/run --runs 3 --json /tmp/peers.json
//!   ```
//!
//! - `path` (not in `all`): where the time of a cross-region delivery goes.
//!   The peers scenario's Meridian workload (`--peers-rate`,
//!   `--peers-seconds`, `--peers-body-bytes`), on a local mode whose nodes
//!   export their spans over OTLP to a collector in the bench: each
//!   message's latency cut into the stretches between its hops, with p50,
//!   p90 and p99 of each, per run and over all `--runs`. With
//!   `--path-home receiver` the group is homed in the receiver's region, so
//!   each `Send` waits for the home's verdict (a remote group's send-ack).
//!
//! Fan-out and sessions (issue 12; none of them in `all`, each run on a
//! fresh local mode; `bench/sessions/`):
//! - `fanout`: one group of `--members` members, all subscribed in
//!   `--local` where the sender is, closed loop (`--fanout-senders`) or open
//!   loop (`--fanout-rate`): deliveries per second summed over the members
//!   and the service center's CPU per delivery;
//! - `idle-sessions`: `--sessions` (100,000) idle subscriptions held by
//!   `--local`'s service center, started with a `--max-subscriptions` that
//!   allows them: its RSS per subscription;
//! - `reconnect-storm`: `--sessions` (10,000) sessions, each with a token
//!   and a subscription, cut at once and resumed at once by token and
//!   cursor: per-session resume latency and the time until all have.
//!
//! `failover` and `backends` start their own PostgreSQL server
//! (`meridian_tests::postgres`: Debian's PostgreSQL 15 from
//! `tests/postgres/install`; as root the server runs as `nobody`) and their
//! own local mode on a manifest of the three example regions with the
//! replicas they need (`--postgres eu=URL`). `failover --endpoints FILE`
//! measures a local mode already running on PostgreSQL instead.
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
use bench::{ack, backends, deliver, failover, local, manifest, peers, throughput};
use meridian_tests::postgres::Postgres;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// ack, deliver and throughput on one local mode.
    All,
    Ack,
    Deliver,
    Throughput,
    /// Kills of a service-center replica under load (PostgreSQL, 2 replicas).
    Failover,
    /// Throughput on SQLite, PostgreSQL with 1 replica, and with 2.
    Backends,
    /// One group's fan-out to its members in one region.
    Fanout,
    /// Idle subscriptions held by one service center: RSS per subscription.
    IdleSessions,
    /// Sessions cut at once and resumed at once by token.
    ReconnectStorm,
    /// Side by side with NATS core and JetStream (cross-region delivery).
    Peers,
    /// Where a cross-region delivery's time goes, from the nodes' spans.
    Path,
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
    /// Throughput and backends scenarios: groups the senders are dealt
    /// over, all homed in the measured region.
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

    /// Failover scenario: messages per second, open loop.
    #[arg(long, default_value_t = 500.0)]
    failover_rate: f64,
    /// Failover scenario: kills per run.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Failover scenario: seconds between kills.
    #[arg(long, default_value_t = 8.0)]
    kill_interval: f64,
    /// Failover scenario: milliseconds one attempt may take before the
    /// client moves to another replica.
    #[arg(long, default_value_t = 1000)]
    attempt_timeout_ms: u64,
    /// Failover scenario: seconds after which an unacknowledged send is
    /// given up (and counted).
    #[arg(long, default_value_t = 30.0)]
    give_up: f64,
    /// Backends scenario: sends whose PostgreSQL statements are logged and
    /// listed, once per PostgreSQL configuration (0: none).
    #[arg(long, default_value_t = 3)]
    statement_sends: usize,
    #[command(flatten)]
    sessions: bench::sessions::Args,

    /// Peers scenario: messages per second, open loop, for every system.
    #[arg(long, default_value_t = 1000.0)]
    peers_rate: f64,
    /// Peers scenario: measured seconds of each system's round.
    #[arg(long, default_value_t = 10.0)]
    peers_seconds: f64,
    /// Peers scenario: size of each message in bytes.
    #[arg(long, default_value_t = 256)]
    peers_body_bytes: usize,
    /// Peers scenario: the nats-server binary (benches/peers/run installs
    /// v2.15.2).
    #[arg(long, value_name = "PATH", env = "MERIDIAN_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Peers scenario: write the summary (per system p50_ms, p99_ms,
    /// p999_ms over all runs) to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Path scenario: where the group is homed. `sender`: the peers
    /// scenario's route. `receiver`: in the receiver's region, so each
    /// `Send` is acknowledged with the home's verdict, and the breakdown
    /// shows where a remote group's send-ack goes.
    #[arg(long, value_enum, default_value_t = bench::path::Home::Sender)]
    path_home: bench::path::Home,
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
        anyhow::ensure!(self.failover_rate > 0.0, "--failover-rate must be positive");
        anyhow::ensure!(self.kills >= 1, "--kills must be at least 1");
        anyhow::ensure!(
            self.kill_interval >= 1.0,
            "--kill-interval must be at least 1 second"
        );
        anyhow::ensure!(
            self.attempt_timeout_ms >= 1 && self.give_up > 0.0,
            "--attempt-timeout-ms and --give-up must be positive"
        );
        anyhow::ensure!(
            self.scenario != Scenario::Backends || self.endpoints.is_none(),
            "--scenario backends starts its own local modes: drop --endpoints"
        );
        anyhow::ensure!(
            self.rate > 0.0 && self.deliver_rate > 0.0,
            "rates must be positive"
        );
        anyhow::ensure!(self.duration > 0.0, "--duration must be positive");
        anyhow::ensure!(
            self.peers_rate > 0.0 && self.peers_seconds > 0.0,
            "--peers-rate and --peers-seconds must be positive"
        );
        anyhow::ensure!(
            self.peers_body_bytes >= 64,
            "--peers-body-bytes must be at least 64 (a body carries its send time and index)"
        );
        anyhow::ensure!(
            self.json.is_none() || self.scenario == Scenario::Peers,
            "--json is written by --scenario peers only"
        );
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
    match args.scenario {
        Scenario::Failover => {
            return tokio::select! {
                result = failover_runs(&args) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
        }
        Scenario::Fanout | Scenario::IdleSessions | Scenario::ReconnectStorm => {
            let which = match args.scenario {
                Scenario::Fanout => bench::sessions::Which::Fanout,
                Scenario::IdleSessions => bench::sessions::Which::IdleSessions,
                _ => bench::sessions::Which::ReconnectStorm,
            };
            let common = sessions_common(&args);
            return tokio::select! {
                result = bench::sessions::run(which, &common, &args.sessions) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
        }
        Scenario::Path => {
            let root = workspace_root();
            let params = bench::path::Params {
                deliver: peers_meridian(&args),
                runs: args.runs,
                operator: operator(&args),
                manifest: args
                    .manifest
                    .clone()
                    .unwrap_or_else(|| root.join("examples/three-regions.yaml")),
                start_timeout: Duration::from_secs(args.start_timeout),
                span_wait: Duration::from_secs(30),
                home: args.path_home,
            };
            return tokio::select! {
                result = bench::path::run(&params) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
        }
        Scenario::Backends => {
            let params = backends::Params {
                throughput: throughput_params(&args),
                region: args.local.clone(),
                runs: args.runs,
                operator: operator(&args),
                start_timeout: Duration::from_secs(args.start_timeout),
                statement_sends: args.statement_sends,
            };
            return tokio::select! {
                result = backends::run(&params) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            };
        }
        _ => {}
    }
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

    let work = async {
        if args.scenario == Scenario::Peers {
            peers_runs(&args, &endpoints).await
        } else {
            all_runs(&args, &endpoints).await
        }
    };
    let result = tokio::select! {
        result = work => result,
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

/// What the fan-out and sessions scenarios take of the common flags.
fn sessions_common(args: &Args) -> bench::sessions::Common {
    bench::sessions::Common {
        runs: args.runs,
        warmup: secs(args.warmup),
        duration: secs(args.duration),
        body_bytes: args.body_bytes,
        straggler_wait: secs(args.straggler_wait),
        max_in_flight: args.max_in_flight,
        connections: args.connections,
        region: args.local.clone(),
        endpoints: args.endpoints.clone(),
        operator: operator(args),
        manifest: args
            .manifest
            .clone()
            .unwrap_or_else(|| workspace_root().join("examples/three-regions.yaml")),
        state_dir: args.state_dir.clone(),
        start_timeout: Duration::from_secs(args.start_timeout),
    }
}

/// The failover scenario, `--runs` times on one system: its own PostgreSQL
/// and local mode with two replicas in `--local`, or `--endpoints`.
async fn failover_runs(args: &Args) -> anyhow::Result<()> {
    let region = args.local.clone();
    // Kept until the end: dropping them stops local mode, then the server.
    let mut server = None;
    let mut running = None;
    let files = tempfile::Builder::new()
        .prefix("meridian-bench-manifests-")
        .tempdir()?;
    let endpoints = match &args.endpoints {
        Some(file) => Endpoints::load(file)?,
        None => {
            let pg = tokio::task::spawn_blocking(Postgres::start)
                .await?
                .context("starting PostgreSQL (tests/src/postgres.rs)")?;
            let url = tokio::task::block_in_place(|| pg.create_database("failover"))?;
            server = Some(pg);
            let manifest = match &args.manifest {
                Some(path) => path.clone(),
                None => manifest::write(files.path(), &region, 2)?,
            };
            let (endpoints, local) = local::start(
                &operator(args),
                &manifest,
                args.state_dir.as_deref(),
                &["--postgres".to_owned(), format!("{region}={url}")],
                Duration::from_secs(args.start_timeout),
            )
            .await?;
            running = Some(local);
            endpoints
        }
    };
    let params = failover::Params {
        region: region.clone(),
        rate: args.failover_rate,
        kills: args.kills,
        interval: secs(args.kill_interval),
        warmup: secs(args.warmup),
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms),
        give_up: secs(args.give_up),
        max_in_flight: args.max_in_flight,
        body_bytes: args.body_bytes,
    };
    let mut kills = Vec::new();
    let mut checks = Vec::new();
    for run in 1..=args.runs {
        let ctx = Ctx {
            endpoints: endpoints.clone(),
            prefix: prefix(run),
        };
        println!(
            "\n=== run {run} of {} (names prefixed {}) ===",
            args.runs, ctx.prefix
        );
        let (_, k, check) = failover::run(&ctx, &params)
            .await
            .with_context(|| format!("run {run}"))?;
        kills.extend(k);
        checks.push(check);
    }

    println!("\n=== summary: {} kills ===", kills.len());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut served: Vec<f64> = kills
        .iter()
        .map(|k| k.served_again.map_or(f64::INFINITY, ms))
        .collect();
    let mut gaps: Vec<f64> = kills.iter().map(|k| ms(k.longest_gap)).collect();
    served.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let median = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or_default();
    let max = |v: &[f64]| v.last().copied().unwrap_or_default();
    println!(
        "served again by the other replica, ms (sorted): {}; median {:.1}, max {:.1}",
        list(&served),
        median(&served),
        max(&served)
    );
    println!(
        "longest gap between acks around each kill, ms (sorted): {}; median {:.1}, max {:.1}",
        list(&gaps),
        median(&gaps),
        max(&gaps)
    );
    println!(
        "sends retried per kill: {}; failed attempts per kill: {}; answered as duplicates: {}",
        kills
            .iter()
            .map(|k| k.retried_sends.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        kills
            .iter()
            .map(|k| k.failed_attempts.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        kills
            .iter()
            .map(|k| k.duplicates.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "killed replica restarted and serving again after, s: {}",
        kills
            .iter()
            .map(|k| k
                .back_after
                .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (i, check) in checks.iter().enumerate() {
        println!(
            "history, run {}: {} acked, {} in history, lost {}, duplicated {}, seq gaps {}, seq mismatches {}, given up {}",
            i + 1,
            check.acked,
            check.history,
            check.lost,
            check.duplicated,
            check.seq_gaps,
            check.seq_mismatches,
            check.given_up
        );
    }
    if let Some(local) = running {
        let pid = local.pid().unwrap_or_default();
        match local.stop().await {
            Ok(status) => println!("\nstopped local mode (pid {pid}): {status}"),
            Err(e) => eprintln!("stopping local mode: {e:#}"),
        }
    }
    drop(server);
    anyhow::ensure!(
        checks.iter().all(failover::Check::clean),
        "the history check found lost, duplicated or out-of-place messages"
    );
    Ok(())
}

/// The peers scenario on `endpoints` (Meridian) and NATS servers of its own.
async fn peers_runs(args: &Args, endpoints: &Endpoints) -> anyhow::Result<()> {
    for region in [&args.local, &args.remote] {
        endpoints.client(region)?;
    }
    let nats_server = match &args.nats_server {
        Some(path) => path.clone(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/meridian/peers/nats-server-v2.15.2/nats-server"),
    };
    let params = peers::Params {
        nats_server,
        nats: peers::nats::Params {
            schedule: peers_schedule(args),
            body_bytes: args.peers_body_bytes,
            straggler_wait: secs(args.straggler_wait),
            ready_timeout: Duration::from_secs(args.start_timeout),
        },
        meridian: peers_meridian(args),
        runs: args.runs,
        start_timeout: Duration::from_secs(args.start_timeout),
        json: args.json.clone(),
    };
    peers::run(&params, endpoints).await
}

/// The peers scenario's open-loop schedule, the same for every system.
fn peers_schedule(args: &Args) -> Schedule {
    Schedule {
        rate: args.peers_rate,
        warmup: secs(args.warmup),
        duration: secs(args.peers_seconds),
        max_in_flight: args.max_in_flight,
        timeout: Duration::from_secs(10),
    }
}

/// The peers scenario's Meridian workload: the cross-region route.
fn peers_meridian(args: &Args) -> deliver::Params {
    deliver::Params {
        schedule: peers_schedule(args),
        connections: args.connections,
        body_bytes: args.peers_body_bytes,
        straggler_wait: secs(args.straggler_wait),
        local: args.local.clone(),
        remote: args.remote.clone(),
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own checks of the flags (ids unique, groups well formed),
    /// which only a debug build runs at start.
    #[test]
    fn the_flags_are_well_formed() {
        super::Args::command().debug_assert();
    }
}
