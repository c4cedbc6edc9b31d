//! What the side-by-side scenario reports: per system and run the delivery
//! latency from the intended send time and the pacer's own lag, the same
//! over all runs (histograms merged, not percentiles averaged), the
//! Meridian / NATS ratios, as a Markdown table (pasted as is into
//! BENCHMARKS.md) and as a JSON summary.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::super::report::{Percentiles, histogram};

/// A system measured, in the order each run measures them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Nats,
    JetStream,
    Meridian,
}

impl System {
    pub const ALL: [System; 3] = [System::Nats, System::JetStream, System::Meridian];

    /// Its key in the JSON summary.
    pub fn key(self) -> &'static str {
        match self {
            System::Nats => "nats",
            System::JetStream => "jetstream",
            System::Meridian => "meridian",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            System::Nats => "NATS core",
            System::JetStream => "JetStream",
            System::Meridian => "Meridian",
        }
    }
}

/// One system's measured window of one run.
pub struct Round {
    /// Intended send time to delivery, of the measured messages delivered
    /// (each once).
    pub latency: Histogram<u64>,
    /// The pacer's lag: intended to actual send, of the measured sends (a
    /// send held back by the in-flight bound counts its wait for a slot).
    pub lag: Histogram<u64>,
    /// Measured messages sent: acked (JetStream, Meridian) or handed to
    /// the connection (NATS core, which has no ack).
    pub sent: u64,
    /// Sent measured messages never delivered.
    pub missing: u64,
    /// Anything else worth a look (errors, repeats), or empty.
    pub note: String,
}

impl Round {
    pub fn line(&self) -> String {
        let lag = Percentiles::of(&self.lag);
        let mut line = format!(
            "{}; sent {}, delivered {}, missing {}; pacer lag p50 {:.3} p99 {:.3} ms",
            Percentiles::of(&self.latency).line(),
            self.sent,
            self.latency.len(),
            self.missing,
            ms(lag.p50),
            ms(lag.p99)
        );
        if !self.note.is_empty() {
            line.push_str("; ");
            line.push_str(&self.note);
        }
        line
    }
}

/// Every run of every system.
#[derive(Default)]
pub struct Summary {
    /// Per run, the systems in the order measured.
    pub runs: Vec<Vec<(System, Round)>>,
}

/// A system over all runs.
struct Total {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    sent: u64,
    missing: u64,
}

impl Summary {
    fn total(&self, system: System) -> Option<Total> {
        let mut total = Total {
            latency: histogram(),
            lag: histogram(),
            sent: 0,
            missing: 0,
        };
        let mut any = false;
        for (_, round) in self.runs.iter().flatten().filter(|(s, _)| *s == system) {
            any = true;
            total.latency.add(&round.latency).ok()?;
            total.lag.add(&round.lag).ok()?;
            total.sent += round.sent;
            total.missing += round.missing;
        }
        any.then_some(total)
    }

    /// The table: each run's rows, then all runs', each with the ratios.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| run | system | p50 | p99 | p99.9 | max | delivered / sent | pacer lag p50 / p99 |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for (i, run) in self.runs.iter().enumerate() {
            let get = |s: System| run.iter().find(|(x, _)| *x == s).map(|(_, r)| r);
            for (system, round) in run {
                out.push_str(&row(
                    &(i + 1).to_string(),
                    system.label(),
                    &round.latency,
                    &round.lag,
                    round.sent,
                ));
            }
            out.push_str(&ratio_rows(
                &(i + 1).to_string(),
                get(System::Meridian).map(|r| &r.latency),
                get(System::Nats).map(|r| &r.latency),
                get(System::JetStream).map(|r| &r.latency),
            ));
        }
        let totals: Vec<(System, Option<Total>)> =
            System::ALL.iter().map(|s| (*s, self.total(*s))).collect();
        for (system, total) in &totals {
            if let Some(t) = total {
                out.push_str(&row("all", system.label(), &t.latency, &t.lag, t.sent));
            }
        }
        let latency = |s: System| {
            totals
                .iter()
                .find(|(x, _)| *x == s)
                .and_then(|(_, t)| t.as_ref())
                .map(|t| &t.latency)
        };
        out.push_str(&ratio_rows(
            "all",
            latency(System::Meridian),
            latency(System::Nats),
            latency(System::JetStream),
        ));
        out
    }

    /// `{"systems": {"nats": {...}, "jetstream": {...}, "meridian": {...}},
    /// "ratios": {...}}`: each system's percentiles over all its runs (in
    /// ms), its counts, and each run's percentiles; `settings` is copied in.
    pub fn json(&self, settings: Value) -> Value {
        let mut systems = serde_json::Map::new();
        for system in System::ALL {
            let Some(total) = self.total(system) else {
                continue;
            };
            let mut entry = figures(&total.latency, &total.lag);
            entry["sent"] = json!(total.sent);
            entry["missing"] = json!(total.missing);
            entry["runs"] = self
                .runs
                .iter()
                .flatten()
                .filter(|(s, _)| *s == system)
                .map(|(_, r)| {
                    let mut run = figures(&r.latency, &r.lag);
                    run["sent"] = json!(r.sent);
                    run["missing"] = json!(r.missing);
                    run
                })
                .collect();
            systems.insert(system.key().to_owned(), entry);
        }
        let total = |s| self.total(s).map(|t| Percentiles::of(&t.latency));
        let meridian = total(System::Meridian);
        let over = |peer: Option<Percentiles>| match (meridian, peer) {
            (Some(m), Some(p)) => json!({
                "p50": ratio(m.p50, p.p50),
                "p99": ratio(m.p99, p.p99),
                "p999": ratio(m.p999, p.p999),
            }),
            _ => Value::Null,
        };
        json!({
            "settings": settings,
            "systems": systems,
            "ratios": {
                "meridian_over_nats": over(total(System::Nats)),
                "meridian_over_jetstream": over(total(System::JetStream)),
            },
        })
    }
}

/// p50, p99, p99.9, max (ms), delivered, and the pacer's lag p50/p99.
fn figures(latency: &Histogram<u64>, lag: &Histogram<u64>) -> Value {
    let p = Percentiles::of(latency);
    let l = Percentiles::of(lag);
    json!({
        "p50_ms": ms(p.p50),
        "p99_ms": ms(p.p99),
        "p999_ms": ms(p.p999),
        "max_ms": ms(p.max),
        "delivered": p.count,
        "pacer_lag_p50_ms": ms(l.p50),
        "pacer_lag_p99_ms": ms(l.p99),
    })
}

fn row(
    run: &str,
    label: &str,
    latency: &Histogram<u64>,
    lag: &Histogram<u64>,
    sent: u64,
) -> String {
    let p = Percentiles::of(latency);
    let l = Percentiles::of(lag);
    if p.count == 0 {
        return format!("| {run} | {label} | - | - | - | - | 0 / {sent} | - |\n");
    }
    format!(
        "| {run} | {label} | {:.2} | {:.2} | {:.2} | {:.2} | {} / {sent} | {:.3} / {:.3} |\n",
        ms(p.p50),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        p.count,
        ms(l.p50),
        ms(l.p99),
    )
}

fn ratio_rows(
    run: &str,
    meridian: Option<&Histogram<u64>>,
    nats: Option<&Histogram<u64>>,
    jetstream: Option<&Histogram<u64>>,
) -> String {
    let Some(meridian) = meridian.map(Percentiles::of) else {
        return String::new();
    };
    let mut out = String::new();
    for (label, peer) in [
        ("Meridian / NATS core", nats),
        ("Meridian / JetStream", jetstream),
    ] {
        let Some(peer) = peer.map(Percentiles::of) else {
            continue;
        };
        let x = |m, p| ratio(m, p).map_or("-".to_owned(), |r| format!("{r:.1}×"));
        out.push_str(&format!(
            "| {run} | {label} | {} | {} | {} | | | |\n",
            x(meridian.p50, peer.p50),
            x(meridian.p99, peer.p99),
            x(meridian.p999, peer.p999),
        ));
    }
    out
}

/// `a / b`, none when either is missing (zero: no samples).
fn ratio(a: u64, b: u64) -> Option<f64> {
    (a > 0 && b > 0).then(|| a as f64 / b as f64)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Writes `value` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees half a summary.
pub fn write_atomically(path: &Path, value: &Value) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    serde_json::to_writer_pretty(&mut file, value)?;
    std::io::Write::write_all(&mut file, b"\n")?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::record_micros;

    /// A round whose latencies are `micros` and whose lag is 10 µs.
    fn round(micros: &[u64]) -> Round {
        let mut latency = histogram();
        let mut lag = histogram();
        for m in micros {
            record_micros(&mut latency, *m);
            record_micros(&mut lag, 10);
        }
        Round {
            latency,
            lag,
            sent: micros.len() as u64 + 1,
            missing: 1,
            note: String::new(),
        }
    }

    fn summary() -> Summary {
        Summary {
            runs: vec![
                vec![
                    (System::Nats, round(&[200; 100])),
                    (System::JetStream, round(&[500; 100])),
                    (System::Meridian, round(&[1500; 100])),
                ],
                vec![
                    (System::Nats, round(&[400; 100])),
                    (System::JetStream, round(&[500; 100])),
                    (System::Meridian, round(&[2000; 100])),
                ],
            ],
        }
    }

    #[test]
    fn the_json_has_each_system_over_all_its_runs() {
        let v = summary().json(json!({"rate": 1000}));
        assert_eq!(v["settings"]["rate"], 1000);
        let nats = &v["systems"]["nats"];
        // 100 samples at 200 µs and 100 at 400 µs: merged, not averaged.
        assert_eq!(nats["p50_ms"], 0.2);
        assert_eq!(nats["p99_ms"], 0.4);
        assert_eq!(nats["p999_ms"], 0.4);
        assert_eq!(nats["delivered"], 200);
        assert_eq!(nats["sent"], 202);
        assert_eq!(nats["missing"], 2);
        assert_eq!(nats["pacer_lag_p99_ms"], 0.01);
        assert_eq!(nats["runs"].as_array().unwrap().len(), 2);
        assert_eq!(nats["runs"][1]["p50_ms"], 0.4);
        assert_eq!(v["systems"]["jetstream"]["p50_ms"], 0.5);
        assert_eq!(v["systems"]["meridian"]["p99_ms"], 2.0);
        assert_eq!(v["ratios"]["meridian_over_jetstream"]["p50"], 3.0);
        assert_eq!(v["ratios"]["meridian_over_nats"]["p50"], 7.5);
        assert_eq!(v["ratios"]["meridian_over_nats"]["p99"], 5.0);
    }

    #[test]
    fn the_table_has_each_run_all_runs_and_the_ratios() {
        let table = summary().table();
        assert!(
            table.contains(
                "| 1 | NATS core | 0.20 | 0.20 | 0.20 | 0.20 | 100 / 101 | 0.010 / 0.010 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| 2 | Meridian / NATS core | 5.0× | 5.0× | 5.0× | | | |"),
            "{table}"
        );
        assert!(
            table.contains("| all | Meridian / JetStream | 3.0× | 4.0× | 4.0× | | | |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + 2 * 5 + 5, "{table}");
    }

    #[test]
    fn no_samples_give_no_ratio() {
        assert_eq!(ratio(3, 0), None);
        let empty = Summary {
            runs: vec![vec![
                (System::Nats, round(&[])),
                (System::Meridian, round(&[1000])),
            ]],
        };
        let v = empty.json(Value::Null);
        assert_eq!(v["ratios"]["meridian_over_nats"]["p50"], Value::Null);
        assert_eq!(v["ratios"]["meridian_over_jetstream"], Value::Null);
        assert!(v["systems"].get("jetstream").is_none());
    }

    #[test]
    fn the_summary_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, &json!({"systems": {}})).unwrap();
        let read: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, json!({"systems": {}}));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
