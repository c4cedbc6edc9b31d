//! Drains the durable outbox: one worker per destination region sends the
//! waiting items in order through the roaming system, and clears them only
//! once the destination has acknowledged. Failures are retried with
//! exponential backoff and jitter, for as long as it takes. The
//! acknowledgement carries the destination's verdicts on the submissions
//! among the items: the worker records them with the clear and hands them
//! to the `Send` calls waiting (see [`super::verdicts`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::data_center::DataCenter;
use super::data_center::tx::Pending;
use super::departed::{self, Dropped};
use super::replicas::{Notice, Replica};
use super::roaming_client::{Carry, RoamingClient};
use super::verdicts::{self, Submitted, Verdicts};
use crate::limits::MAX_BATCH_ITEMS;
use crate::proto::peer_api::CarryOrder;
use crate::tasks::Tasks;
use crate::telemetry::ServiceCenterMetrics;
use crate::telemetry::traces;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A worker looks again at least this often, even when not woken.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a destination's lease lasts unless renewed: a replica that
/// died stops carrying for at most this long (one that stops releases its
/// leases at once). Renewed before each batch once a third of it has
/// passed; an attempt gives up [`LEASE_MARGIN`] before the lease ends.
const LEASE_TTL: Duration = Duration::from_secs(6);
const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// On a shared data center, how often a busy worker looks again below the
/// ids it has carried, for items that committed late (an idle one looks at
/// once): ids come from a sequence, which is not commit order.
const RESCAN: Duration = Duration::from_secs(1);
/// Bounds a worker's clears in flight; a rescan waits for all of them.
const CLEARS: u32 = 1 << 16;
/// Batches a worker keeps in flight to its destination: each goes without
/// waiting for the one before it to be acknowledged, and the destination
/// applies them in order (see [`Run`]).
const WINDOW: usize = 4;

#[derive(Clone)]
pub struct Outbox {
    dc: DataCenter,
    link: Arc<RoamingClient>,
    workers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    tasks: Tasks,
    metrics: ServiceCenterMetrics,
    verdicts: Verdicts,
    /// Destinations whose last delivery failed (their workers are retrying).
    failing: Arc<Mutex<HashSet<String>>>,
    /// Items dropped because their destination left the mesh.
    dropped: Dropped,
    /// This replica: it carries a destination's items only while it holds
    /// the destination's lease, and tells the others the verdicts.
    replica: Replica,
}

impl Outbox {
    /// An outbox whose workers run as `tasks` (and so stop with them),
    /// count their batches in `metrics`, and hand the destinations'
    /// verdicts to `verdicts`.
    pub fn new(
        dc: DataCenter,
        link: Arc<RoamingClient>,
        tasks: Tasks,
        metrics: ServiceCenterMetrics,
        verdicts: Verdicts,
        replica: Replica,
    ) -> Self {
        Self {
            dc,
            link,
            workers: Arc::default(),
            tasks,
            metrics,
            verdicts,
            failing: Arc::default(),
            dropped: Dropped::default(),
            replica,
        }
    }

    /// Items dropped unsent since this process started, because their
    /// destination left the mesh (see [`super::departed`]).
    pub fn dropped_total(&self) -> u64 {
        self.dropped.total()
    }

    /// Whether the last attempt to deliver to `destination` failed: it
    /// cannot be asked now, so a `Send` need not wait for its verdict.
    pub fn is_failing(&self, destination: &str) -> bool {
        self.failing
            .lock()
            .expect("failing destinations")
            .contains(destination)
    }

    fn set_failing(&self, destination: &str, failing: bool) {
        let mut set = self.failing.lock().expect("failing destinations");
        if failing {
            set.insert(destination.to_owned());
        } else {
            set.remove(destination);
        }
    }

    /// Starts workers for whatever a previous run left in the outbox.
    pub async fn resume(&self) -> Result<(), crate::Error> {
        for destination in self.dc.read(|tx| tx.destinations()).await? {
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
        let outbox = self.clone();
        let destination = destination.to_owned();
        // Every await in `drain` may wait long (a cut link, a backoff); a
        // stop ends it there. Items not yet cleared are resent next run.
        self.tasks
            .spawn_until_stopped(async move { outbox.drain(destination, notify).await });
    }

    async fn drain(self, destination: String, notify: Arc<Notify>) {
        // Acknowledged up to this id, and put in flight up to this one.
        let mut sent_up_to = 0i64;
        let mut read_up_to = 0i64;
        let mut run = Run::new();
        let mut in_flight: FuturesOrdered<BoxFuture<'static, Carried>> = FuturesOrdered::new();
        let mut backoff = FIRST_BACKOFF;
        let mut leased: Option<std::time::Instant> = None;
        let clearing = Arc::new(Semaphore::new(CLEARS as usize));
        let mut rescanned = std::time::Instant::now();
        // The last read found nothing after `read_up_to`.
        let mut ran_out = false;
        loop {
            // On a shared data center, items may commit below the ids this
            // worker carried (see [`RESCAN`]): it looks again from the
            // oldest item left when it runs out, and at least every
            // [`RESCAN`] while busy, once what it has in flight is back.
            // Elsewhere, running out means waiting.
            let mut rescan = sent_up_to > 0
                && self.replica.is_shared()
                && (ran_out || rescanned.elapsed() >= RESCAN);
            if in_flight.is_empty() {
                if rescan {
                    settle(&clearing).await;
                    (sent_up_to, read_up_to, rescan) = (0, 0, false);
                    rescanned = std::time::Instant::now();
                } else if ran_out {
                    let _ = tokio::time::timeout(IDLE_CHECK, notify.notified()).await;
                }
                ran_out = false;
            }
            if in_flight.len() < run.window() && !ran_out && !rescan {
                if leased.is_none_or(|at| at.elapsed() > LEASE_TTL / 3) {
                    let renewing = std::time::Instant::now();
                    match self.lease(&destination).await {
                        Ok(true) => leased = Some(renewing),
                        held_elsewhere => {
                            if let Err(err) = held_elsewhere {
                                tracing::warn!(%err, %destination, "outbox lease unknown");
                            }
                            // Another replica carries these items now; once
                            // this one leases again, it starts a new run
                            // from the oldest item left.
                            leased = None;
                            in_flight = FuturesOrdered::new();
                            (sent_up_to, read_up_to, run) = (0, 0, Run::new());
                            let _ = tokio::time::timeout(IDLE_CHECK, notify.notified()).await;
                            continue;
                        }
                    }
                }
                let dest = destination.clone();
                let batch = self
                    .dc
                    .read(move |tx| tx.pending(&dest, read_up_to, MAX_BATCH_ITEMS))
                    .await;
                match batch {
                    Ok(batch) if batch.is_empty() => ran_out = true,
                    Ok(_) if !self.link.in_mesh(&destination) => {
                        self.depart(&destination).await;
                        return;
                    }
                    Ok(batch) => {
                        read_up_to = batch.last().map_or(read_up_to, |p| p.id);
                        in_flight.push_back(self.send(&destination, batch, run.next(), leased));
                    }
                    Err(err) => {
                        tracing::error!(%err, %destination, "outbox unreadable");
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                }
                continue;
            }
            // The window is full, or there is nothing more to send now:
            // the oldest batch's answer, or more items to send meanwhile.
            let room = in_flight.len() < run.window() && !rescan;
            let carried = tokio::select! {
                Some(carried) = in_flight.next() => carried,
                () = notify.notified(), if room => {
                    ran_out = false;
                    continue;
                }
                // Nothing in flight (not reached: the window is filled
                // first whenever it is empty).
                else => continue,
            };
            match carried.outcome {
                Ok(Carry::Applied { verdicts, ordered }) => {
                    self.metrics.carried(&destination, carried.ids.len());
                    self.set_failing(&destination, false);
                    sent_up_to = carried.last_id;
                    backoff = FIRST_BACKOFF;
                    let judged = verdicts::judged(carried.submitted, &verdicts);
                    self.conclude(&destination, carried.ids, judged, &clearing);
                    if ordered {
                        run.acknowledged();
                    } else {
                        // Applied as it came: the destination, or a roaming
                        // system on the way, is from before runs. One batch
                        // at a time keeps the order, as it did then.
                        in_flight = FuturesOrdered::new();
                        (read_up_to, run) = (sent_up_to, Run::new());
                    }
                }
                not_applied => {
                    // What is in flight behind it cannot apply either: a
                    // new run resends from the oldest unacknowledged item.
                    in_flight = FuturesOrdered::new();
                    (read_up_to, run, ran_out) = (sent_up_to, Run::new(), false);
                    if let Err(err) = not_applied {
                        self.set_failing(&destination, true);
                        self.metrics.carry_failed(&destination);
                        tracing::debug!(%err, %destination, "outbox delivery failed; retrying");
                        let jitter = rand::rng().random_range(0.5..1.5);
                        tokio::time::sleep(backoff.mul_f64(jitter)).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    } else {
                        self.metrics.carry_out_of_order(&destination);
                        tracing::debug!(%destination, "outbox batch arrived out of order; resending");
                    }
                }
            }
        }
    }

    /// Carries one batch as `order` of its run, starting at once (in a task
    /// of its own, aborted when its answer is dropped). The attempt ends
    /// while the lease still runs, so that no other replica carries this
    /// destination while it may be in flight.
    fn send(
        &self,
        destination: &str,
        batch: Vec<Pending>,
        order: CarryOrder,
        leased: Option<std::time::Instant>,
    ) -> BoxFuture<'static, Carried> {
        let ids: Vec<i64> = batch.iter().map(|p| p.id).collect();
        let last_id = ids.last().copied().unwrap_or_default();
        let span = self.carry_span(destination, &batch);
        let items: Vec<_> = batch.into_iter().map(|p| p.item).collect();
        let submitted = Submitted::among(&items);
        let lease_left = leased.map_or(Duration::ZERO, |at| {
            LEASE_TTL.saturating_sub(at.elapsed() + LEASE_MARGIN)
        });
        let (link, destination) = (self.link.clone(), destination.to_owned());
        let carry = async move {
            tokio::time::timeout(lease_left, link.carry(&destination, items, order))
                .await
                .unwrap_or_else(|_| {
                    Err(crate::Error::Unavailable(format!(
                        "no answer from {destination} within the outbox lease"
                    )))
                })
        };
        let carrying = AbortOnDropHandle::new(tokio::spawn(carry.instrument(span)));
        async move {
            let outcome = carrying.await.unwrap_or_else(|err| {
                Err(crate::Error::Internal(format!(
                    "an outbox carry ended: {err}"
                )))
            });
            Carried {
                ids,
                last_id,
                submitted,
                outcome,
            }
        }
        .boxed()
    }

    /// Hands this replica's destinations to the others (it is stopping,
    /// and its workers have stopped).
    pub async fn release(&self) {
        let holder = self.replica.id().to_owned();
        if let Err(err) = self.dc.write(move |tx| tx.release_leases(&holder)).await {
            tracing::warn!(%err, "outbox leases not released; they expire");
        }
    }

    async fn lease(&self, destination: &str) -> Result<bool, crate::Error> {
        let (dest, holder) = (destination.to_owned(), self.replica.id().to_owned());
        let ttl_ms = LEASE_TTL.as_millis() as i64;
        self.dc
            .write(move |tx| tx.lease(&dest, &holder, ttl_ms))
            .await
    }

    /// The `outbox.carry` span of one attempt at a batch: in the trace of
    /// its first traced item (the send, or the receipt, that wrote it),
    /// and linked to the traces of the others, which it carries too.
    fn carry_span(&self, destination: &str, batch: &[Pending]) -> tracing::Span {
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

    /// Ends the worker of `destination`, which left the mesh, and drops
    /// its items. The worker leaves the map first: an item written after
    /// that wakes a new worker, which drops it in turn; one written before
    /// is dropped here.
    async fn depart(&self, destination: &str) {
        self.workers
            .lock()
            .expect("outbox workers")
            .remove(destination);
        self.set_failing(destination, false);
        match departed::discard(&self.dc, destination, &self.dropped).await {
            Ok(items) => self.metrics.outbox_dropped(destination, items),
            Err(err) => tracing::error!(%err, %destination, "dropping outbox items failed"),
        }
    }

    /// After `destination` acknowledged the items `ids`, with
    /// its verdicts on the submissions among it: hands each verdict to the
    /// `Send` calls waiting for it at once, then records the verdicts and
    /// clears the items in one commit, then hands them to calls that began
    /// waiting meanwhile (a retry registers, then reads the record) and
    /// tells the senders whom no call was waiting for. Clearing need not
    /// hold up the next batch: a crash before it commits only means a
    /// resend, which the destination answers the same way.
    fn conclude(
        &self,
        destination: &str,
        ids: Vec<i64>,
        judged: Vec<(Submitted, verdicts::Verdict)>,
        clearing: &Arc<Semaphore>,
    ) {
        let permit = clearing.clone().try_acquire_owned().ok();
        let unclaimed: Vec<bool> = judged
            .iter()
            .map(|(s, v)| !self.verdicts.hand_over(&s.message_id, v))
            .collect();
        let wire: Vec<_> = judged
            .iter()
            .map(|(s, v)| v.to_wire(&s.message_id))
            .collect();
        let (dc, dest, verdicts, replica) = (
            self.dc.clone(),
            destination.to_owned(),
            self.verdicts.clone(),
            self.replica.clone(),
        );
        let notices: Vec<Notice> = judged
            .iter()
            .zip(&wire)
            .zip(&unclaimed)
            .map(|(((submitted, _), verdict), unclaimed)| Notice::Judged {
                submitted: submitted.clone(),
                verdict: verdict.clone(),
                unclaimed: *unclaimed,
            })
            .collect();
        self.tasks.spawn(|_| async move {
            // Lazily: nothing waits for the clear but what follows here, so
            // it may share the commit of the next write (a send's).
            let cleared = dc
                .write_lazily(move |tx| {
                    for verdict in &wire {
                        tx.record_verdict(verdict)?;
                    }
                    for notice in &notices {
                        replica.announce(tx, notice)?;
                    }
                    tx.clear(&dest, &ids)
                })
                .await;
            drop(permit);
            if let Err(err) = cleared {
                tracing::error!(%err, "outbox clear failed");
            }
            for ((submitted, verdict), unclaimed) in judged.iter().zip(unclaimed) {
                let claimed = verdicts.hand_over(&submitted.message_id, verdict);
                if unclaimed && !claimed {
                    verdicts.tell_sender(submitted, verdict);
                }
            }
        });
    }
}

/// A worker's run of batches to its destination (`CarryOrder` in
/// peer.proto): the destination applies them in the order of their numbers,
/// so several can be in flight at once. A run starts with one batch alone
/// (the destination takes any run's first), and keeps to one until the
/// destination answers that it applied one in its turn (`ordered`: a
/// destination from before runs does not). It starts again after any
/// batch is not applied, from the oldest unacknowledged item.
struct Run {
    chain: i64,
    next: i64,
    /// Whether the destination has applied a batch of the run in its turn.
    started: bool,
}

impl Run {
    fn new() -> Self {
        Self {
            chain: rand::rng().random(),
            next: 0,
            started: false,
        }
    }

    /// The next batch's place in the run.
    fn next(&mut self) -> CarryOrder {
        let order = CarryOrder {
            chain: self.chain,
            batch: self.next,
        };
        self.next += 1;
        order
    }

    fn acknowledged(&mut self) {
        self.started = true;
    }

    /// How many batches may be in flight: one until the destination has
    /// applied one of the run in its turn.
    fn window(&self) -> usize {
        if self.started { WINDOW } else { 1 }
    }
}

/// One batch's attempt, answered.
struct Carried {
    ids: Vec<i64>,
    last_id: i64,
    submitted: Vec<Submitted>,
    outcome: Result<Carry, crate::Error>,
}

/// Waits until every clear a worker has in flight has committed: then any
/// item left below the ids it carried is one that committed late (or one
/// whose clear failed, which the destination answers again the same way),
/// so a worker on a shared data center may start again from the oldest
/// item left.
async fn settle(clearing: &Semaphore) {
    let _settled = clearing.acquire_many(CLEARS).await;
}
