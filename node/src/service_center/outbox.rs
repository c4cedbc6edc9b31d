//! Drains the durable outbox: one worker per destination region sends the
//! waiting items in order through the roaming system, and clears them only
//! once the destination has acknowledged. Failures are retried with
//! exponential backoff and jitter, for as long as it takes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tracing::Instrument;

use super::data_center::{DataCenter, outbox};
use super::roaming_link::RoamingLink;
use crate::limits::MAX_BATCH_ITEMS;
use crate::telemetry::ServiceCenterMetrics;
use crate::telemetry::traces;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A worker looks again at least this often, even when not woken.
const IDLE_CHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Outbox {
    dc: DataCenter,
    link: Arc<RoamingLink>,
    workers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    metrics: ServiceCenterMetrics,
}

impl Outbox {
    /// An outbox whose workers count their batches in `metrics`.
    pub fn new(dc: DataCenter, link: Arc<RoamingLink>, metrics: ServiceCenterMetrics) -> Self {
        Self {
            dc,
            link,
            workers: Arc::default(),
            metrics,
        }
    }

    /// Starts workers for whatever a previous run left in the outbox.
    pub async fn resume(&self) -> Result<(), crate::Error> {
        for destination in self.dc.read(outbox::destinations).await? {
            self.wake(&destination);
        }
        Ok(())
    }

    /// Tells the worker for `destination` that items are waiting.
    pub fn wake(&self, destination: &str) {
        let mut workers = self.workers.lock().expect("outbox workers");
        if let Some(notify) = workers.get(destination) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(destination.to_owned(), notify.clone());
        tokio::spawn(self.clone().drain(destination.to_owned(), notify));
    }

    async fn drain(self, destination: String, notify: Arc<Notify>) {
        let mut sent_up_to = 0i64;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let dest = destination.clone();
            let batch = self
                .dc
                .read(move |conn| outbox::pending(conn, &dest, sent_up_to, MAX_BATCH_ITEMS))
                .await;
            let batch = match batch {
                Ok(batch) if batch.is_empty() => {
                    let _ = tokio::time::timeout(IDLE_CHECK, notify.notified()).await;
                    continue;
                }
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(%err, %destination, "outbox unreadable");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            let last_id = batch.last().map(|p| p.id).unwrap_or(sent_up_to);
            let span = self.carry_span(&destination, &batch);
            let items: Vec<_> = batch.into_iter().map(|p| p.item).collect();
            let count = items.len();
            match self.link.carry(&destination, items).instrument(span).await {
                Ok(()) => {
                    self.metrics.carried(&destination, count);
                    sent_up_to = last_id;
                    backoff = FIRST_BACKOFF;
                    let (dc, dest) = (self.dc.clone(), destination.clone());
                    // Clearing need not hold up the next batch: a crash
                    // before it commits only means a resend, which the
                    // receiver ignores.
                    tokio::spawn(async move {
                        if let Err(err) = dc
                            .write(move |conn| outbox::clear(conn, &dest, last_id))
                            .await
                        {
                            tracing::error!(%err, "outbox clear failed");
                        }
                    });
                }
                Err(err) => {
                    self.metrics.carry_failed(&destination);
                    tracing::debug!(%err, %destination, "outbox delivery failed; retrying");
                    let jitter = rand::rng().random_range(0.5..1.5);
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The `outbox.carry` span of one attempt at a batch: in the trace of
    /// its first traced item (the send, or the receipt, that wrote it),
    /// and linked to the traces of the others, which it carries too.
    fn carry_span(&self, destination: &str, batch: &[outbox::Pending]) -> tracing::Span {
        let span = tracing::info_span!(
            "outbox.carry",
            region = %self.link.region(),
            destination,
            items = batch.len(),
        );
        let mut traced = batch
            .iter()
            .map(|p| p.traceparent.as_str())
            .filter(|t| !t.is_empty());
        if let Some(first) = traced.next() {
            traces::follow(&span, first);
            let mut linked = HashSet::from([first]);
            for other in traced {
                if linked.insert(other) {
                    traces::link(&span, other);
                }
            }
        }
        span
    }
}
