//! What a write of the business center leaves to do once it commits: its
//! live pushes, in commit order ([`InOrder`]), and the outbox workers to
//! wake; and the pushes a receiving region may make before its write
//! commits ([`Early`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::Error;
use crate::proto::client_api::Delivery;
use crate::proto::peer_api::Item;
use crate::service_center::data_center::Tx;
use crate::service_center::hub::Hub;
use crate::service_center::outbox::Outbox;
use crate::service_center::replicas::{Notice, Replica};
use crate::tasks::Tasks;

/// What a committed write leaves to do: live pushes and outbox wake-ups.
#[derive(Default)]
pub(super) struct Effects {
    pushes: Vec<Push>,
    /// Pushes of records of messages already durable at their home, which
    /// go out as soon as the write has applied them, before it commits
    /// (see [`Early`]).
    early: Vec<Push>,
    destinations: Vec<String>,
    /// The trace the write belongs to (a `traceparent`), kept with the
    /// outbox items it writes.
    trace: String,
}

/// A delivery to push to the live sessions of its recipients here: one
/// copy, shared by all of them.
struct Push {
    delivery: Arc<Delivery>,
    users: Vec<String>,
}

impl Effects {
    pub(super) fn traced(trace: String) -> Self {
        Self {
            trace,
            ..Self::default()
        }
    }

    /// Tells the region's other replicas what this write leaves them to
    /// do: push to their sessions of the recipients, and carry the items
    /// of the destinations whose leases they hold.
    pub(super) fn announce(&self, tx: &mut dyn Tx, replica: &Replica) -> Result<(), Error> {
        if !replica.is_shared() {
            return Ok(());
        }
        let mut delivered: BTreeMap<(&str, u64), Vec<String>> = BTreeMap::new();
        for Push { delivery, users } in self.pushes.iter().chain(&self.early) {
            delivered
                .entry((delivery.group.as_str(), delivery.seq))
                .or_default()
                .extend(users.iter().cloned());
        }
        for ((group, seq), users) in delivered {
            let group = group.to_owned();
            replica.announce(tx, &Notice::Delivered { group, seq, users })?;
        }
        for destination in &self.destinations {
            let destination = destination.clone();
            replica.announce(tx, &Notice::Waiting { destination })?;
        }
        Ok(())
    }

    /// Writes `item` to the outbox for `destination`, whose worker is
    /// woken once the write commits.
    pub(super) fn enqueue(
        &mut self,
        tx: &mut dyn Tx,
        destination: &str,
        item: Item,
    ) -> Result<(), Error> {
        tx.enqueue(destination, &item, &self.trace, crate::now_ms())?;
        if !self.destinations.iter().any(|d| d == destination) {
            self.destinations.push(destination.to_owned());
        }
        Ok(())
    }

    /// Pushes `delivery` to this region's sessions of `users`, when
    /// `stored` allows.
    pub(super) fn push(&mut self, delivery: &Delivery, users: &[String], stored: Stored) {
        let push = Push {
            delivery: Arc::new(delivery.clone()),
            users: users.to_vec(),
        };
        match stored {
            Stored::Now => self.pushes.push(push),
            Stored::AtHome => self.early.push(push),
        }
    }

    /// Carries out what the committed write left to do: its pushes, unless
    /// [`InOrder`] took them as it committed (or [`Early`] before), and the
    /// outbox wake-ups.
    pub(super) fn carry_out(self, hub: &Hub, outbox: &Outbox) {
        for Push { delivery, users } in self.pushes.into_iter().chain(self.early) {
            hub.push_to(&users, delivery);
        }
        for destination in &self.destinations {
            outbox.wake(destination);
        }
    }
}

/// Pushes the deliveries of committed writes to the hub in the order the
/// writes committed. [`DataCenter::after_commit`] takes a write's pushes
/// from its effects as it commits (on SQLite on the writer thread, in
/// commit order) and one task pushes them. Pushed from each caller's task
/// after its write returned, as before, the deliveries of writes that
/// committed together reached subscriptions out of seq order, and every
/// subscription then read the gap from history (`subscribe`): a read per
/// subscriber, which a fan-out to 100 members paid 100 times.
///
/// The same task pushes what [`Early`] hands it from inside a write, before
/// that write commits.
///
/// [`DataCenter::after_commit`]: crate::service_center::data_center::DataCenter::after_commit
#[derive(Clone)]
pub(super) struct InOrder(mpsc::UnboundedSender<Committed>);

/// One write's pushes, and the span of the flow that wrote it (`send` or
/// `receive`), which each push's `deliver` span is a child of.
type Committed = (tracing::Span, Vec<Push>);

impl InOrder {
    /// Starts the task that pushes, as one of `tasks`.
    pub(super) fn start(hub: Hub, tasks: &Tasks) -> Self {
        let (pushes, mut committed) = mpsc::unbounded_channel::<Committed>();
        tasks.spawn_until_stopped(async move {
            while let Some((span, pushes)) = committed.recv().await {
                let _in_flow = span.enter();
                for Push { delivery, users } in pushes {
                    hub.push_to(&users, delivery);
                }
            }
        });
        Self(pushes)
    }

    /// What pushes, from inside a write, the records it applied of
    /// messages durable at their home, in the current span.
    pub(super) fn early(&self) -> Early {
        Early {
            pushes: self.0.clone(),
            span: tracing::Span::current(),
        }
    }

    /// What takes a write's pushes from its effects as it commits, to
    /// follow those of the writes committed before it, in the current span.
    /// Quick: it runs on the writer thread.
    pub(super) fn taker<T>(
        &self,
        effects: fn(&mut T) -> &mut Effects,
    ) -> impl FnOnce(&mut T) + Send + use<T> {
        let (pushes, span) = (self.0.clone(), tracing::Span::current());
        move |written| hand_on(&pushes, &span, &mut effects(written).pushes)
    }
}

/// Hands what `taken` holds to the push task, if anything, in `span`.
fn hand_on(pushes: &mpsc::UnboundedSender<Committed>, span: &tracing::Span, taken: &mut Vec<Push>) {
    let taken = std::mem::take(taken);
    if !taken.is_empty() {
        // Fails only once the task has stopped, with the service center.
        let _ = pushes.send((span.clone(), taken));
    }
}

/// Pushes a receiving region's records of messages before the write that
/// stores them commits. Each is durable at the group's home, which
/// sequenced it, and the outbox that carried it here (the home's, or for a
/// roaming forward that of the recipient's home region) carries it again
/// until this region acknowledges it, which it does only after the
/// commit: a commit that fails loses nothing, and the message is pushed
/// again when it comes again, which a subscription drops as sent
/// (`subscribe`). A subscription that starts in between replays from the
/// home, which has it. So the receiving region's commit (its fsync, and
/// the wait for the writer) is not on the path from a send to the members
/// in other regions. A seq the write assigns itself is never pushed before
/// it commits: until then it is not the message's.
pub(super) struct Early {
    pushes: mpsc::UnboundedSender<Committed>,
    span: tracing::Span,
}

impl Early {
    /// Hands what `effects` holds to push early to the push task, in the
    /// order the writes run; quick, as it runs on the writer thread. Within
    /// a batch of writes that commit together on SQLite, it goes ahead of
    /// the pushes of the jobs before it, which wait for the commit; those
    /// are of groups homed here, and an early push never is, so no group's
    /// seqs reach a subscription out of order for that.
    pub(super) fn push(&self, effects: &mut Effects) {
        hand_on(&self.pushes, &self.span, &mut effects.early);
    }
}

/// Where a delivery is durable, which decides when it may be pushed.
#[derive(Clone, Copy)]
pub(super) enum Stored {
    /// Sequenced by this write: pushed once it commits.
    Now,
    /// Already at the group's home: pushed before this write commits
    /// ([`Early`]).
    AtHome,
}
