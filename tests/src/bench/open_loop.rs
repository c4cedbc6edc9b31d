//! An open-loop load generator. Request `i` is due at `t0 + i / rate`
//! whatever happened to the earlier ones, and its latency is measured from
//! that intended time, not from when it actually went out (correcting for
//! coordinated omission). Requests run concurrently, at most `max_in_flight`
//! at once; when that bound is hit the next request waits for a slot and is
//! counted as held back (its wait still counts in its latency).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::report::{Errors, histogram, record, wall_micros};

#[derive(Clone, Debug)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// Issued at the rate but not measured.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
    pub max_in_flight: usize,
    /// One request's limit; a request that takes longer is an error.
    pub timeout: Duration,
}

/// What a request is told about itself.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub index: u64,
    /// False during the warm-up.
    pub measured: bool,
    /// The intended start time on the wall clock, in µs since the Unix epoch.
    pub intended_wall_micros: u64,
}

/// The measured part of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Intended start to completion, of the successful measured requests.
    pub latency: Histogram<u64>,
    /// Intended start to actual start (the generator's own lateness).
    pub start_lag: Histogram<u64>,
    pub issued: u64,
    pub ok: u64,
    pub errors: Errors,
    /// Requests that had to wait for an in-flight slot.
    pub held_back: u64,
    /// Requests still running when the generator gave up waiting.
    pub unfinished: u64,
}

impl Outcome {
    /// `held back N, unfinished N, errors N (…)`, the non-zero ones.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.held_back > 0 {
            notes.push(format!(
                "held back by the in-flight bound {}",
                self.held_back
            ));
        }
        if self.unfinished > 0 {
            notes.push(format!("unfinished {}", self.unfinished));
        }
        notes.push(self.errors.describe());
        notes
    }
}

struct Acc {
    latency: Histogram<u64>,
    start_lag: Histogram<u64>,
    ok: u64,
    errors: Errors,
}

/// Runs `issue` on the schedule and waits for the requests to finish.
pub async fn run<F, Fut>(schedule: &Schedule, mut issue: F) -> Outcome
where
    F: FnMut(Slot) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let interval = 1.0 / schedule.rate;
    let warmup = (schedule.warmup.as_secs_f64() * schedule.rate).round() as u64;
    let measured = (schedule.duration.as_secs_f64() * schedule.rate).round() as u64;
    let acc = Arc::new(Mutex::new(Acc {
        latency: histogram(),
        start_lag: histogram(),
        ok: 0,
        errors: Errors::default(),
    }));
    let slots = Arc::new(Semaphore::new(schedule.max_in_flight));
    let mut held_back = 0;

    // A thread paces the requests: a timer of the async runtime fires on
    // millisecond ticks, which would add up to a millisecond of lateness to
    // most requests; a sleeping thread wakes within tens of microseconds.
    let total = warmup + measured;
    let std_t0 = std::time::Instant::now() + Duration::from_millis(10);
    let t0 = Instant::from_std(std_t0);
    let wall0 = wall_micros() + 10_000;
    let (due_tx, mut due) = tokio::sync::mpsc::unbounded_channel();
    let pacer = std::thread::spawn(move || {
        for index in 0..total {
            let intended = std_t0 + Duration::from_secs_f64(index as f64 * interval);
            let now = std::time::Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            if due_tx.send(index).is_err() {
                return;
            }
        }
    });
    while let Some(index) = due.recv().await {
        let offset = Duration::from_secs_f64(index as f64 * interval);
        let intended = t0 + offset;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                held_back += u64::from(index >= warmup);
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let slot = Slot {
            index,
            measured: index >= warmup,
            intended_wall_micros: wall0 + offset.as_micros() as u64,
        };
        let request = issue(slot);
        let acc = acc.clone();
        let timeout = schedule.timeout;
        tokio::spawn(async move {
            let started = Instant::now();
            let result = tokio::time::timeout(timeout, request).await;
            let done = Instant::now();
            // The slot is given back only after the result is recorded, so
            // that a drained semaphore means a complete tally.
            let _permit = permit;
            if !slot.measured {
                return;
            }
            let mut acc = acc.lock().expect("accumulator");
            record(
                &mut acc.start_lag,
                started.saturating_duration_since(intended),
            );
            match result {
                Ok(Ok(())) => {
                    acc.ok += 1;
                    record(&mut acc.latency, done.saturating_duration_since(intended));
                }
                Ok(Err(e)) => acc.errors.add(e),
                Err(_) => acc.errors.add(format!("no reply within {timeout:?}")),
            }
        });
    }

    let _ = pacer.join();

    // Every slot back means every request has finished.
    let all = u32::try_from(schedule.max_in_flight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        schedule.timeout + Duration::from_secs(5),
        slots.acquire_many(all),
    )
    .await;
    let unfinished = match drained {
        Ok(_) => 0,
        Err(_) => (schedule.max_in_flight - slots.available_permits()) as u64,
    };
    let mut acc = acc.lock().expect("accumulator");
    Outcome {
        latency: std::mem::replace(&mut acc.latency, histogram()),
        start_lag: std::mem::replace(&mut acc.start_lag, histogram()),
        issued: measured,
        ok: acc.ok,
        errors: std::mem::take(&mut acc.errors),
        held_back,
        unfinished,
    }
}
