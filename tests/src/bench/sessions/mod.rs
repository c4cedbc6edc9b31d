//! Fan-out and sessions (issue 12): the scenarios `fanout`, `idle-sessions`
//! and `reconnect-storm` of `meridian-bench`, none of them in `all`. Each run
//! gets a fresh local mode (unless `--endpoints` names one), so one run's
//! users, sessions and memory do not weigh on the next; the table at the end
//! has every run, and says which of the targets each met.

pub mod crowd;
pub mod fanout;
pub mod idle;
pub mod storm;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::local::{self, Endpoints};
use super::setup::{Ctx, prefix};

/// The targets (this 2-core machine, load generator included).
const TARGET_DELIVERIES_PER_SECOND: f64 = 250_000.0;
const TARGET_CENTER_US_PER_DELIVERY: f64 = 5.0;
const TARGET_KIB_PER_SUBSCRIPTION: f64 = 20.0;
const TARGET_STORM: Duration = Duration::from_secs(10);

/// The flags of these scenarios. Their group has an id of its own: clap
/// names a group after its struct, and meridian-bench's own flags are an
/// `Args` too (a debug build refuses two groups of one name at start).
#[derive(Debug, clap::Args)]
#[group(id = "sessions_scenarios")]
pub struct Args {
    /// Fanout: members of the group, every one subscribed at --local on a
    /// connection of its own.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Fanout: concurrent senders, closed loop.
    #[arg(long, default_value_t = 16)]
    pub fanout_senders: usize,
    /// Fanout: send open loop at this many sends per second instead.
    #[arg(long)]
    pub fanout_rate: Option<f64>,
    /// Idle-sessions and reconnect-storm: subscriptions (sessions) held
    /// [default: 100000 for idle-sessions, 10000 for reconnect-storm].
    #[arg(long)]
    pub sessions: Option<usize>,
    /// Idle-sessions: HTTP/2 connections the subscriptions are dealt over.
    #[arg(long, default_value_t = 100)]
    pub session_connections: usize,
    /// Reconnect-storm: connections the returning sessions share
    /// [default: one per session].
    #[arg(long)]
    pub storm_connections: Option<usize>,
    /// Reconnect-storm: seconds after which a session that has not resumed
    /// is given up.
    #[arg(long, default_value_t = 60.0)]
    pub storm_give_up: f64,
    /// Idle-sessions and reconnect-storm: members of each group the users
    /// are put in.
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
    /// The service center's `--max-subscriptions` in the local mode these
    /// scenarios start [default: for idle-sessions --sessions plus 1000
    /// when that is above the node's default; otherwise the node's default].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Fanout,
    IdleSessions,
    ReconnectStorm,
}

/// What these scenarios take of `meridian-bench`'s common flags.
pub struct Common {
    pub runs: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub body_bytes: usize,
    pub straggler_wait: Duration,
    pub max_in_flight: usize,
    /// Connections the fan-out's sends go over.
    pub connections: usize,
    pub region: String,
    pub endpoints: Option<PathBuf>,
    pub operator: PathBuf,
    pub manifest: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub start_timeout: Duration,
}

impl Args {
    fn sessions(&self, which: Which) -> usize {
        self.sessions.unwrap_or(match which {
            Which::IdleSessions => 100_000,
            _ => 10_000,
        })
    }

    fn check(&self, which: Which, common: &Common) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=999).contains(&self.members),
            "--members must be 1 to 999 (a group holds 1000 by default, the sender too)"
        );
        anyhow::ensure!(
            self.fanout_senders >= 1,
            "--fanout-senders must be at least 1"
        );
        anyhow::ensure!(
            self.fanout_rate.is_none_or(|r| r > 0.0),
            "--fanout-rate must be positive"
        );
        anyhow::ensure!(self.sessions(which) >= 1, "--sessions must be at least 1");
        anyhow::ensure!(
            self.session_connections >= 1 && self.storm_connections.is_none_or(|c| c >= 1),
            "--session-connections and --storm-connections must be at least 1"
        );
        anyhow::ensure!(self.storm_give_up > 0.0, "--storm-give-up must be positive");
        anyhow::ensure!(
            (1..=999).contains(&self.group_size),
            "--group-size must be 1 to 999"
        );
        anyhow::ensure!(
            self.max_subscriptions.is_none_or(|n| n >= 1),
            "--max-subscriptions must be at least 1"
        );
        anyhow::ensure!(
            common.endpoints.is_none() || self.max_subscriptions.is_none(),
            "--max-subscriptions sets up the local mode this starts: drop --endpoints"
        );
        Ok(())
    }

    /// The environment of the local mode started for `which`.
    fn env(&self, which: Which) -> Vec<(String, String)> {
        let default = meridian_node::limits::MAX_SUBSCRIPTIONS;
        let max = match (self.max_subscriptions, which) {
            (Some(n), _) => Some(n),
            (None, Which::IdleSessions) if self.sessions(which) + 1000 > default => {
                Some(self.sessions(which) + 1000)
            }
            _ => None,
        };
        max.map(|n| ("MERIDIAN_MAX_SUBSCRIPTIONS".to_owned(), n.to_string()))
            .into_iter()
            .collect()
    }
}

/// One run's figures.
enum Figures {
    Fanout(fanout::Figures),
    Idle(idle::Figures),
    Storm(storm::Figures),
}

pub async fn run(which: Which, common: &Common, args: &Args) -> anyhow::Result<()> {
    args.check(which, common)?;
    let mut results = Vec::new();
    for run in 1..=common.runs {
        println!("\n=== run {run} of {} ===", common.runs);
        let env = args.env(which);
        let (endpoints, running) = match &common.endpoints {
            Some(file) => (Endpoints::load(file)?, None),
            None => {
                let (endpoints, local) = local::start_with_env(
                    &common.operator,
                    &common.manifest,
                    common.state_dir.as_deref(),
                    &[],
                    &env,
                    common.start_timeout,
                )
                .await?;
                (endpoints, Some(local))
            }
        };
        let ctx = Ctx {
            endpoints,
            prefix: prefix(run),
        };
        let measured = one(which, common, args, &ctx)
            .await
            .with_context(|| format!("run {run}"));
        if let Some(local) = running {
            let pid = local.pid().unwrap_or_default();
            match local.stop().await {
                Ok(status) => println!("stopped local mode (pid {pid}): {status}"),
                Err(e) => eprintln!("stopping local mode: {e:#}"),
            }
        }
        let figures = measured?;
        let rows = match &figures {
            Figures::Fanout(f) => &f.rows,
            Figures::Idle(f) => &f.rows,
            Figures::Storm(f) => &f.rows,
        };
        for row in rows {
            row.print();
        }
        results.push(figures);
    }
    summary(which, args, &results);
    Ok(())
}

async fn one(which: Which, common: &Common, args: &Args, ctx: &Ctx) -> anyhow::Result<Figures> {
    let region = common.region.clone();
    Ok(match which {
        Which::Fanout => Figures::Fanout(
            fanout::run(
                ctx,
                &fanout::Params {
                    region,
                    members: args.members,
                    senders: args.fanout_senders,
                    rate: args.fanout_rate,
                    max_in_flight: common.max_in_flight,
                    connections: common.connections,
                    warmup: common.warmup,
                    duration: common.duration,
                    body_bytes: common.body_bytes,
                    straggler_wait: common.straggler_wait,
                },
            )
            .await?,
        ),
        Which::IdleSessions => Figures::Idle(
            idle::run(
                ctx,
                &idle::Params {
                    region,
                    sessions: args.sessions(which),
                    connections: args.session_connections,
                    group_size: args.group_size,
                },
            )
            .await?,
        ),
        Which::ReconnectStorm => {
            let sessions = args.sessions(which);
            Figures::Storm(
                storm::run(
                    ctx,
                    &storm::Params {
                        region,
                        sessions,
                        connections: args.storm_connections.unwrap_or(sessions),
                        group_size: args.group_size,
                        give_up: Duration::from_secs_f64(args.storm_give_up),
                    },
                )
                .await?,
            )
        }
    })
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

fn summary(which: Which, args: &Args, results: &[Figures]) {
    let ms = |us: u64| us as f64 / 1000.0;
    match which {
        Which::Fanout => {
            println!(
                "\n=== summary: fan-out to {} members ===\n| run | sends/s | deliveries/s | service center µs/delivery | all servers µs/delivery | service center cores | deliver p50 ms | p99 ms | target |\n|---|---|---|---|---|---|---|---|---|",
                args.members
            );
            for (i, f) in results.iter().enumerate() {
                let Figures::Fanout(f) = f else { continue };
                println!(
                    "| {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} deliveries/s, {} µs |",
                    i + 1,
                    f.sends_per_second,
                    f.deliveries_per_second,
                    f.center_us_per_delivery,
                    f.servers_us_per_delivery,
                    f.center_cores,
                    ms(f.deliver.p50),
                    ms(f.deliver.p99),
                    met(f.deliveries_per_second >= TARGET_DELIVERIES_PER_SECOND),
                    met(f.center_us_per_delivery <= TARGET_CENTER_US_PER_DELIVERY),
                );
            }
            println!(
                "targets: >= {TARGET_DELIVERIES_PER_SECOND:.0} deliveries/s at <= {TARGET_CENTER_US_PER_DELIVERY} µs of service-center CPU per delivery"
            );
        }
        Which::IdleSessions => {
            println!(
                "\n=== summary: idle subscriptions, the service center's RSS ({}) ===\n| run | held | baseline MiB | held MiB | KiB per subscription | after release MiB | target |\n|---|---|---|---|---|---|---|",
                idle::SETTLE_NOTE
            );
            for (i, f) in results.iter().enumerate() {
                let Figures::Idle(f) = f else { continue };
                let mib = |kib: u64| kib as f64 / 1024.0;
                println!(
                    "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {} |",
                    i + 1,
                    f.held,
                    mib(f.baseline_kib),
                    mib(f.held_kib),
                    f.kib_per_subscription(),
                    mib(f.released_kib),
                    met(f.held >= args.sessions(which)
                        && f.kib_per_subscription() <= TARGET_KIB_PER_SUBSCRIPTION),
                );
            }
            println!(
                "target: {} idle subscriptions at <= {TARGET_KIB_PER_SUBSCRIPTION} KiB RSS each",
                args.sessions(which)
            );
        }
        Which::ReconnectStorm => {
            println!(
                "\n=== summary: reconnect storm ===\n| run | sessions | resumed | all resumed in s | resume p50 ms | p99 ms | max ms | subscribed p50 ms | p99 ms | failures retried | target |\n|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for (i, f) in results.iter().enumerate() {
                let Figures::Storm(f) = f else { continue };
                let failures: Vec<String> =
                    f.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!(
                    "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
                    i + 1,
                    f.sessions,
                    f.resumed,
                    f.all_resumed
                        .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64())),
                    ms(f.resume.p50),
                    ms(f.resume.p99),
                    ms(f.resume.max),
                    ms(f.subscribed.p50),
                    ms(f.subscribed.p99),
                    if failures.is_empty() {
                        "none".into()
                    } else {
                        failures.join(", ")
                    },
                    met(f.all_resumed.is_some_and(|d| d <= TARGET_STORM)),
                );
            }
            println!(
                "target: {} sessions resume within {} s",
                args.sessions(which),
                TARGET_STORM.as_secs()
            );
        }
    }
}
