//! Scenario `backends`: the throughput scenario's closed loop, one region's
//! durable sends per second and their ack latency, on each data-center
//! backend in turn (docs/ARCHITECTURE.md §12): SQLite (local mode's
//! default), PostgreSQL with one service-center replica, and PostgreSQL with
//! two, the senders' connections dealt over both. Each configuration gets a
//! fresh local mode (and a fresh database), one after the other, run after
//! run, so that the shared machine's drift hits all three alike.
//!
//! Besides the rates it shows where the time goes: the CPU of each process
//! over the measured window (the region's service-center replicas, its
//! roaming system, the other regions, the PostgreSQL server with its
//! backends, and this load generator), flushes (`fsync`/`fdatasync`, where
//! `perf` counts them), the server's WAL and transaction counters, and the
//! statements one send runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use meridian_tests::postgres::Postgres;

use super::cpu::{Group, Probe, Source};
use super::local::{self, Endpoints};
use super::pg::{self, Counters};
use super::report::{Percentiles, Row};
use super::setup::{Ctx, body, prefix};
use super::{manifest, throughput};

/// One data-center configuration of the measured region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub postgres: bool,
    pub replicas: u32,
}

impl Config {
    pub fn all() -> [Config; 3] {
        [
            Config {
                postgres: false,
                replicas: 1,
            },
            Config {
                postgres: true,
                replicas: 1,
            },
            Config {
                postgres: true,
                replicas: 2,
            },
        ]
    }

    pub fn label(&self) -> String {
        match (self.postgres, self.replicas) {
            (false, _) => "SQLite".into(),
            (true, 1) => "PostgreSQL, 1 replica".into(),
            (true, n) => format!("PostgreSQL, {n} replicas"),
        }
    }
}

pub struct Params {
    pub throughput: throughput::Params,
    pub region: String,
    pub runs: usize,
    pub operator: PathBuf,
    pub start_timeout: Duration,
    /// Sends whose statements are logged once per PostgreSQL configuration
    /// (0: none).
    pub statement_sends: usize,
}

/// One configuration's figures in one run.
struct Figures {
    run: usize,
    config: Config,
    per_second: f64,
    latency: Percentiles,
    cpu: Vec<(String, f64)>,
    seconds: f64,
}

pub async fn run(params: &Params) -> anyhow::Result<()> {
    let server = tokio::task::spawn_blocking(Postgres::start)
        .await?
        .context("starting PostgreSQL (tests/src/postgres.rs)")?;
    let files = tempfile::Builder::new()
        .prefix("meridian-bench-manifests-")
        .tempdir()?;
    let mut results: Vec<Figures> = Vec::new();
    let t = &params.throughput;
    println!(
        "\n-- backends: closed loop, {} concurrent senders over {} connections to {} group(s) homed at {}, {} s warm-up + {} s measured, {} B bodies, one subscribing member; SQLite, then PostgreSQL with 1 and 2 replicas, {} run(s)",
        t.concurrency,
        t.connections,
        t.groups,
        params.region,
        t.warmup.as_secs_f64(),
        t.duration.as_secs_f64(),
        t.body_bytes,
        params.runs
    );
    for run in 1..=params.runs {
        for config in Config::all() {
            println!("\n=== run {run} of {}: {} ===", params.runs, config.label());
            let result = one(params, &server, files.path(), run, config)
                .await
                .with_context(|| format!("run {run}, {}", config.label()))?;
            results.push(result);
        }
    }
    summary(&results);
    Ok(())
}

async fn one(
    params: &Params,
    server: &Postgres,
    files: &Path,
    run: usize,
    config: Config,
) -> anyhow::Result<Figures> {
    let region = params.region.as_str();
    let manifest = manifest::write(files, region, config.replicas)?;
    let database = format!("bench_r{run}_{}", config.replicas);
    let mut extra = Vec::new();
    if config.postgres {
        let url = tokio::task::block_in_place(|| server.create_database(&database))?;
        extra = vec!["--postgres".to_owned(), format!("{region}={url}")];
    }
    let (endpoints, local) = local::start(
        &params.operator,
        &manifest,
        None,
        &extra,
        params.start_timeout,
    )
    .await?;
    let ctx = Ctx {
        endpoints,
        prefix: prefix(run),
    };
    let measured = async {
        let mut probe = probe(&ctx.endpoints, region, server)?;
        if config.postgres {
            probe = probe.watch(std::sync::Arc::new(pg::Waits {
                url: server.url_of(&database),
            }));
        }
        let before = match config.postgres {
            true => Some(Counters::read(server, &database)?),
            false => None,
        };
        let measured =
            throughput::run_region(&ctx, &params.throughput, region, Some(probe)).await?;
        let mut rows = measured.rows;
        if let Some(before) = before {
            tokio::time::sleep(pg::SETTLE).await;
            let after = Counters::read(server, &database)?;
            rows.push(Row::Text {
                label: "PostgreSQL counters".into(),
                lines: after.lines_since(&before, measured.acked_total),
            });
            if run == 1 && params.statement_sends > 0 {
                rows.push(statements(&ctx, server, region, params.statement_sends).await?);
            }
        }
        for row in &rows {
            row.print();
        }
        let usage = measured
            .usage
            .unwrap_or_else(|| unreachable!("a probe was given"));
        anyhow::Ok(Figures {
            run,
            config,
            per_second: measured.acked_per_second,
            latency: measured.latency,
            cpu: usage.groups,
            seconds: usage.seconds,
        })
    }
    .await;
    let pid = local.pid().unwrap_or_default();
    match local.stop().await {
        Ok(status) => println!("stopped local mode (pid {pid}): {status}"),
        Err(e) => eprintln!("stopping local mode: {e:#}"),
    }
    measured
}

/// The processes whose CPU is measured: each of the region's service-center
/// replicas, its roaming system, the other regions' processes, the
/// PostgreSQL server and its backends, and this process.
fn probe(endpoints: &Endpoints, region: &str, server: &Postgres) -> anyhow::Result<Probe> {
    let pid = |dir: &Path, stem: &str| -> anyhow::Result<u32> {
        let file = dir.join(format!("{stem}.pid"));
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .with_context(|| format!("no pid in {}", file.display()))
    };
    let dir = endpoints.dir(region)?;
    let mut groups = Vec::new();
    for i in 0..endpoints.clients(region)?.len() {
        let stem = match i {
            0 => "service-center".to_owned(),
            i => format!("service-center-{i}"),
        };
        groups.push(Group {
            label: format!("{region} service center, replica {i}"),
            sources: vec![Source::Pid(pid(dir, &stem)?)],
        });
    }
    groups.push(Group {
        label: format!("{region} roaming system"),
        sources: vec![Source::Pid(pid(dir, "roaming")?)],
    });
    let mut others = Vec::new();
    for (code, other) in &endpoints.dirs {
        if code == region {
            continue;
        }
        for entry in std::fs::read_dir(other)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "pid")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                others.push(Source::Pid(pid(other, stem)?));
            }
        }
    }
    groups.push(Group {
        label: "the other regions' processes".into(),
        sources: others,
    });
    groups.push(Group {
        label: "PostgreSQL (server and backends)".into(),
        sources: server.pid().map(Source::Tree).into_iter().collect(),
    });
    groups.push(Group {
        label: "load generator (this process)".into(),
        sources: vec![Source::Myself],
    });
    Ok(Probe::new(groups))
}

/// The statements the server logged while one session sent `n` messages,
/// one after the other, to a group homed at `region`.
async fn statements(ctx: &Ctx, server: &Postgres, region: &str, n: usize) -> anyhow::Result<Row> {
    let mut sender = ctx.user("stmt-s", region, region).await?;
    let group = sender.create_group(ctx, "stmt").await?;
    let mut client = sender.client.clone();
    let key = ctx.name("stmt");
    let logged = pg::statements_during(server, move || async move {
        for i in 0..n {
            let key = format!("{key}-{i}");
            client.send(&group, &body(&key, 100), &key).await?;
        }
        Ok(())
    })
    .await?;
    let mut lines = vec![format!(
        "{} statements logged while {n} sends ran one after the other ({:.1} per send; \
         every backend's, so background work at that moment shows too):",
        logged.len(),
        logged.len() as f64 / n as f64
    )];
    for (count, text) in pg::tally(&logged) {
        let short: String = text.chars().take(110).collect();
        lines.push(format!("{count:>4} x {short}"));
    }
    lines.push("in the order the server ran them, the first send's share:".into());
    for (i, s) in logged.iter().take(logged.len() / n.max(1)).enumerate() {
        let short: String = s.text.chars().take(100).collect();
        lines.push(format!("{:>4}. [backend {}] {short}", i + 1, s.pid));
    }
    Ok(Row::Text {
        label: "statements of a send, from the server's log".into(),
        lines,
    })
}

fn summary(results: &[Figures]) {
    println!("\n=== summary: durable sends/s and closed-loop ack latency (ms) ===");
    println!(
        "| backend | run | sends/s | p50 | p90 | p99 | p99.9 | max |\n|---|---|---|---|---|---|---|---|"
    );
    for r in results {
        let p = &r.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.config.label(),
            r.run,
            r.per_second,
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max)
        );
    }
    println!("\n=== summary: cores used over the measured window ===");
    for r in results {
        let cores: Vec<String> = r
            .cpu
            .iter()
            .map(|(label, cpu)| format!("{label} {:.2}", cpu / r.seconds.max(1e-9)))
            .collect();
        println!("{}, run {}: {}", r.config.label(), r.run, cores.join(", "));
    }
    let mut medians = Vec::new();
    for config in Config::all() {
        let mut rates: Vec<f64> = results
            .iter()
            .filter(|r| r.config == config)
            .map(|r| r.per_second)
            .collect();
        rates.sort_by(f64::total_cmp);
        if let Some(median) = rates.get(rates.len() / 2) {
            medians.push(format!("{} {median:.0}/s", config.label()));
        }
    }
    println!("\nmedian sends/s: {}", medians.join(", "));
}
