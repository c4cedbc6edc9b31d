//! What the closed-loop scenarios (throughput, and the sessions' fanout)
//! share: when a run warms up and when it measures, the CPU spent in that
//! window, senders that send the next message as soon as the previous one
//! is acked, and the wait for the subscribers to catch up once they stop.

use std::time::Duration;

use hdrhistogram::Histogram;
use meridian_node::client::Client;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cpu::{Probe, Usage};
use super::report::{Errors, histogram, record};

/// When a run sends: from `start` (200 ms after it was planned, so that
/// every task is ready), warming up until `window_start`, then measured
/// until `end`.
#[derive(Clone, Copy)]
pub struct Phases {
    pub start: Instant,
    pub window_start: Instant,
    pub end: Instant,
}

impl Phases {
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + Duration::from_millis(200);
        let window_start = start + warmup;
        Self {
            start,
            window_start,
            end: window_start + duration,
        }
    }

    /// Whether `at` is in the measured window.
    pub fn measures(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.end
    }

    /// The CPU the processes of `probe` spend over the measured window,
    /// read by a task of its own.
    pub fn cpu(&self, probe: Probe) -> JoinHandle<Usage> {
        let Self {
            window_start, end, ..
        } = *self;
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start).await;
            let window = tokio::task::block_in_place(|| probe.start());
            tokio::time::sleep_until(end).await;
            tokio::task::block_in_place(|| probe.finish(window))
        })
    }

    /// Waits until `caught_up` holds, looking every 10 ms, for at most
    /// `straggler_wait` past the end: how long after the end it held, or
    /// `None` if it never did.
    pub async fn catch_up(
        &self,
        straggler_wait: Duration,
        caught_up: impl Fn() -> bool,
    ) -> Option<Duration> {
        let deadline = Instant::now().max(self.end) + straggler_wait;
        loop {
            if caught_up() {
                return Some(Instant::now().saturating_duration_since(self.end));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What closed-loop senders did.
pub struct Tally {
    /// Acked over the whole run, warm-up included.
    pub acked_total: u64,
    /// Acked in the measured window; `latency` holds their send-ack times.
    pub acked_in_window: u64,
    pub latency: Histogram<u64>,
    pub errors: Errors,
}

impl Tally {
    fn new() -> Self {
        Self {
            acked_total: 0,
            acked_in_window: 0,
            latency: histogram(),
            errors: Errors::default(),
        }
    }

    fn add(&mut self, other: Tally) {
        self.acked_total += other.acked_total;
        self.acked_in_window += other.acked_in_window;
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.errors.merge(other.errors);
    }
}

/// Runs `senders` closed-loop senders from `phases.start` to `phases.end`
/// and sums what they did. Sender `i` sends over `pool[i % pool.len()]` to
/// `groups[i % groups.len()]`, with the idempotency keys
/// `<prefix>-<i>-<n>` and the body `body()` gives at each send; after a
/// failed send it waits 10 ms.
pub async fn send<B, F>(
    phases: Phases,
    pool: &[Client],
    groups: &[String],
    senders: usize,
    prefix: &str,
    body: F,
) -> anyhow::Result<Tally>
where
    F: Fn() -> B + Clone + Send + 'static,
    B: AsRef<str> + Send,
{
    anyhow::ensure!(!pool.is_empty(), "closed loop: `pool` has no connection");
    anyhow::ensure!(!groups.is_empty(), "closed loop: `groups` has no group");
    let mut tasks = Vec::with_capacity(senders);
    for task in 0..senders {
        let mut client = pool[task % pool.len()].clone();
        let group = groups[task % groups.len()].clone();
        let (prefix, body) = (prefix.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            tokio::time::sleep_until(phases.start).await;
            let mut n = 0u64;
            while Instant::now() < phases.end {
                let key = format!("{prefix}-{task}-{n}");
                n += 1;
                let sent = Instant::now();
                let body = body();
                let result = client.send(&group, body.as_ref(), &key).await;
                let done = Instant::now();
                match result {
                    Ok(_) => {
                        tally.acked_total += 1;
                        if phases.measures(done) {
                            tally.acked_in_window += 1;
                            record(&mut tally.latency, done - sent);
                        }
                    }
                    Err(s) => {
                        tally.errors.add(format!("{:?}: {}", s.code(), s.message()));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::new();
    for task in tasks {
        all.add(task.await?);
    }
    Ok(all)
}
