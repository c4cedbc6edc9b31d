//! The service center's metric handles and their registration. The names
//! and labels are documented in docs/ARCHITECTURE.md §9; the dashboard in
//! the chart queries them, and a test checks it queries no other.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;
use crate::proto::client_api::SendReply;
use crate::service_center::data_center::DataCenter;

/// The prefix of every metric a node exports.
pub const PREFIX: &str = "meridian";

/// A registry whose every metric is named `meridian_…` and labelled with
/// the region, so that one Prometheus can tell the regions apart.
pub fn registry(region: &str) -> Registry {
    Registry::with_prefix_and_labels(
        PREFIX,
        [("region".into(), region.to_owned().into())].into_iter(),
    )
}

/// The `result` label of a failed call: its gRPC code's name, so that the
/// label has a small fixed set of values.
pub fn failure(err: &Error) -> &'static str {
    match err {
        Error::InvalidArgument(_) => "invalid_argument",
        Error::Unauthenticated(_) => "unauthenticated",
        Error::PermissionDenied(_) => "permission_denied",
        Error::NotFound(_) => "not_found",
        Error::AlreadyExists(_) => "already_exists",
        Error::ResourceExhausted(_) => "resource_exhausted",
        Error::Unavailable(_) => "unavailable",
        Error::FailedPrecondition(_) => "failed_precondition",
        Error::Internal(_) => "internal",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Destination {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationOutcome {
    pub destination: String,
    pub result: &'static str,
}

/// The data center's group commits, observed by its writer thread.
#[derive(Clone, Debug)]
pub struct CommitMetrics {
    duration: Histogram,
    jobs: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        Self {
            // 0.25 ms to about 4 s: an fsync on a fast disk to a stalled one.
            duration: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            // 1 to 1024 jobs, the writer's largest group.
            jobs: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

impl CommitMetrics {
    /// One group commit: `jobs` callers' writes made durable in `took`.
    pub fn observe(&self, took: Duration, jobs: usize) {
        self.duration.observe(took.as_secs_f64());
        self.jobs.observe(jobs as f64);
    }
}

/// The service center's metrics. Clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct ServiceCenterMetrics {
    sends: Family<Outcome, Counter>,
    logins: Family<Outcome, Counter>,
    deliveries: Family<Outcome, Counter>,
    outbox_batches: Family<DestinationOutcome, Counter>,
    outbox_items: Family<Destination, Counter>,
    outbox_dropped: Family<Destination, Counter>,
    outbox_depth: Family<Destination, Gauge>,
    sessions: Gauge,
    subscriptions: Gauge,
    commits: CommitMetrics,
}

impl ServiceCenterMetrics {
    /// The service center's metrics, with its data center's commits. The
    /// usual results start at 0, so that a rate is defined from the first
    /// scrape on.
    pub fn new(commits: CommitMetrics) -> Self {
        let metrics = Self {
            commits,
            ..Self::default()
        };
        for (family, result) in [
            (&metrics.sends, "accepted"),
            (&metrics.sends, "duplicate"),
            (&metrics.logins, "ok"),
            (&metrics.logins, "unauthenticated"),
            (&metrics.deliveries, "pushed"),
            (&metrics.deliveries, "cut_off"),
        ] {
            let _ = family.get_or_create(&Outcome { result });
        }
        metrics
    }

    /// Counts a client's send, passing its result on: `accepted`,
    /// `duplicate` (a retry with the same key), or why it was refused.
    pub fn sent(&self, result: Result<SendReply, Error>) -> Result<SendReply, Error> {
        let label = match &result {
            Ok(reply) if reply.duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(err) => failure(err),
        };
        self.sends.get_or_create(&Outcome { result: label }).inc();
        result
    }

    /// Counts a client's login, passing its result on: `ok`, or why it
    /// failed.
    pub fn logged_in<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        let label = result.as_ref().map_or_else(failure, |_| "ok");
        self.logins.get_or_create(&Outcome { result: label }).inc();
        result
    }

    /// One message pushed to live subscriptions: `pushed` to those that
    /// took it, `cut_off` for those too far behind (they resume from their
    /// cursors).
    pub fn delivered(&self, pushed: usize, cut_off: usize) {
        for (result, n) in [("pushed", pushed), ("cut_off", cut_off)] {
            if n > 0 {
                self.deliveries
                    .get_or_create(&Outcome { result })
                    .inc_by(n as u64);
            }
        }
    }

    /// An outbox batch of `items` that `destination` acknowledged.
    pub fn carried(&self, destination: &str, items: usize) {
        self.outbox_batch(destination, "carried");
        self.outbox_items
            .get_or_create(&Destination {
                destination: destination.to_owned(),
            })
            .inc_by(items as u64);
    }

    /// An outbox batch that did not reach `destination`; it is retried.
    pub fn carry_failed(&self, destination: &str) {
        self.outbox_batch(destination, "failed");
    }

    /// An outbox batch that reached `destination` ahead of the batch
    /// before it, and was not applied; it is resent in a new run.
    pub fn carry_out_of_order(&self, destination: &str) {
        self.outbox_batch(destination, "out_of_order");
    }

    /// Outbox rows dropped unsent, because `destination` left the mesh.
    pub fn outbox_dropped(&self, destination: &str, rows: u64) {
        self.outbox_dropped
            .get_or_create(&Destination {
                destination: destination.to_owned(),
            })
            .inc_by(rows);
    }

    /// A live subscription opened (`true`) or closed.
    pub fn subscription(&self, opened: bool) {
        if opened {
            self.subscriptions.inc();
        } else {
            self.subscriptions.dec();
        }
    }

    fn outbox_batch(&self, destination: &str, result: &'static str) {
        self.outbox_batches
            .get_or_create(&DestinationOutcome {
                destination: destination.to_owned(),
                result,
            })
            .inc();
    }

    /// Reads the gauges that are counted in the data center: the outbox
    /// depth per destination (every one of `peers`, so an empty outbox
    /// shows 0, and any other that still has items) and the sessions in
    /// force.
    pub async fn observe(&self, dc: &DataCenter, peers: &[String]) -> Result<(), Error> {
        let now = crate::now_ms();
        let (depths, sessions) = dc
            .read(move |tx| Ok((tx.depths()?, tx.sessions_in_force(now)?)))
            .await?;
        for destination in peers {
            let label = Destination {
                destination: destination.clone(),
            };
            let _ = self.outbox_items.get_or_create(&label);
            let _ = self.outbox_dropped.get_or_create(&label);
            for result in ["carried", "failed"] {
                let _ = self.outbox_batches.get_or_create(&DestinationOutcome {
                    destination: destination.clone(),
                    result,
                });
            }
        }
        let mut all: BTreeMap<String, i64> = peers.iter().map(|p| (p.clone(), 0)).collect();
        all.extend(depths);
        // Cleared first, so a region that left the mesh and has no items
        // left stops being reported.
        self.outbox_depth.clear();
        for (destination, depth) in all {
            self.outbox_depth
                .get_or_create(&Destination { destination })
                .set(depth);
        }
        self.sessions.set(sessions);
        Ok(())
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sends",
            "Messages clients sent here, by result (accepted, duplicate, or the refusal's gRPC code)",
            self.sends.clone(),
        );
        registry.register(
            "logins",
            "Logins at this region, by result (ok, or the failure's gRPC code)",
            self.logins.clone(),
        );
        registry.register(
            "deliveries",
            "Messages pushed to live subscriptions here, by result (pushed, cut_off)",
            self.deliveries.clone(),
        );
        registry.register(
            "outbox_batches",
            "Outbox batches sent to a destination region, by result (carried, failed)",
            self.outbox_batches.clone(),
        );
        registry.register(
            "outbox_items",
            "Outbox items a destination region acknowledged",
            self.outbox_items.clone(),
        );
        registry.register(
            "outbox_dropped",
            "Outbox items dropped unsent because their destination left the mesh",
            self.outbox_dropped.clone(),
        );
        registry.register(
            "outbox_depth",
            "Outbox items waiting for a destination region",
            self.outbox_depth.clone(),
        );
        registry.register(
            "sessions",
            "Sessions in force at this region (usable or refreshable)",
            self.sessions.clone(),
        );
        registry.register(
            "subscriptions",
            "Live Subscribe streams at this region",
            self.subscriptions.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time of one data center group commit: its jobs and the fsync",
            self.commits.duration.clone(),
        );
        registry.register(
            "commit_batch_jobs",
            "Writes made durable together by one group commit",
            self.commits.jobs.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn results_are_labelled_with_the_region_and_the_outcome() {
        let metrics = ServiceCenterMetrics::default();
        let mut registry = registry("eu");
        metrics.register(&mut registry);
        let reply = |duplicate| SendReply {
            duplicate,
            ..Default::default()
        };
        let _ = metrics.sent(Ok(reply(false)));
        let _ = metrics.sent(Ok(reply(true)));
        let _ = metrics.sent(Err(Error::NotFound("no group".into())));
        let _ = metrics.logged_in::<()>(Err(Error::Unauthenticated("wrong".into())));
        metrics.delivered(2, 1);
        metrics.carried("us", 3);
        metrics.commits.observe(Duration::from_millis(2), 5);
        let text = text(&registry);
        for line in [
            "meridian_sends_total{region=\"eu\",result=\"accepted\"} 1",
            "meridian_sends_total{region=\"eu\",result=\"duplicate\"} 1",
            "meridian_sends_total{region=\"eu\",result=\"not_found\"} 1",
            "meridian_logins_total{region=\"eu\",result=\"unauthenticated\"} 1",
            "meridian_deliveries_total{region=\"eu\",result=\"pushed\"} 2",
            "meridian_deliveries_total{region=\"eu\",result=\"cut_off\"} 1",
            "meridian_outbox_items_total{region=\"eu\",destination=\"us\"} 3",
            "meridian_commit_batch_jobs_count{region=\"eu\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
