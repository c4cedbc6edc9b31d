//! Latency histograms (microsecond resolution) and how they are printed (ms).

use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency a histogram holds; larger values are clamped to it.
const MAX_MICROS: u64 = 60 * 60 * 1_000_000;

/// An empty latency histogram: 1 µs to one hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `latency` in microseconds (at least 1 µs).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    record_micros(
        histogram,
        u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS),
    );
}

pub fn record_micros(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.clamp(1, MAX_MICROS));
}

/// The microseconds since the Unix epoch, from the wall clock.
pub fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The percentiles the benchmark reports, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }

    /// `p50 … max` in milliseconds with two decimals, then the count.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:>8.2}  p90 {:>8.2}  p99 {:>8.2}  p99.9 {:>8.2}  max {:>8.2} ms  count {}",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// One line of a run's summary.
pub enum Row {
    Latency {
        label: String,
        percentiles: Percentiles,
        /// Counts that qualify the numbers (errors, late, missing); empty if none.
        note: String,
    },
    Rate {
        label: String,
        per_second: f64,
        note: String,
    },
    /// Figures that are neither a latency nor a rate (CPU per process,
    /// fsyncs, a failover's timings), one per line.
    Text { label: String, lines: Vec<String> },
}

impl Row {
    pub fn print(&self) {
        match self {
            Row::Latency {
                label,
                percentiles,
                note,
            } => {
                println!("  {label:<40} {}", percentiles.line());
                if !note.is_empty() {
                    println!("  {:<40} {note}", "");
                }
            }
            Row::Rate {
                label,
                per_second,
                note,
            } => {
                println!("  {label:<40} {per_second:>10.0} /s  {note}");
            }
            Row::Text { label, lines } => {
                println!("  {label}:");
                for line in lines {
                    println!("    {line}");
                }
            }
        }
    }
}

/// Keeps the first few distinct error messages, and counts them all.
#[derive(Default, Debug)]
pub struct Errors {
    pub count: u64,
    pub samples: Vec<String>,
}

impl Errors {
    const SAMPLES: usize = 3;

    pub fn add(&mut self, message: String) {
        self.count += 1;
        if self.samples.len() < Self::SAMPLES && !self.samples.contains(&message) {
            self.samples.push(message);
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for sample in other.samples {
            if self.samples.len() < Self::SAMPLES && !self.samples.contains(&sample) {
                self.samples.push(sample);
            }
        }
    }

    /// `errors N (first: …)`, or empty when there were none.
    pub fn describe(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        format!("errors {} (e.g. {})", self.count, self.samples.join(" | "))
    }
}

/// Joins the non-empty parts with ", ".
pub fn notes(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}
