//! What this replica does with what the region's other replicas announce
//! (see `service_center::replicas`): it pushes their deliveries to its own
//! sessions, carries the outbox items of the destinations it leases,
//! answers the `Send` calls waiting here, and forgets revoked sessions.
//!
//! Notices are taken in batches: the deliveries of a batch are read a page
//! per group (one read for a run of seqs, not one per message), so that a
//! replica keeps up with another that commits many messages.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::BusinessCenter;
use crate::limits::{HISTORY_PAGE_BYTES, MAX_HISTORY_PAGE};
use crate::service_center::data_center::postgres::listen::Heard;
use crate::service_center::replicas::Notice;
use crate::service_center::verdicts::Verdict;

/// Notices taken at once, at most.
const BATCH: usize = 512;

/// The deliveries of a batch with sessions here: per group, per seq, the
/// users to push to.
type Deliveries = BTreeMap<String, BTreeMap<u64, Vec<String>>>;

impl BusinessCenter {
    /// Hears until the listener ends (the data center is dropped) or the
    /// business center stops.
    pub(super) async fn hear(self, mut heard: mpsc::Receiver<Heard>) {
        let mut batch = Vec::with_capacity(BATCH);
        while heard.recv_many(&mut batch, BATCH).await > 0 {
            let mut deliveries = Deliveries::new();
            for heard in batch.drain(..) {
                match heard {
                    Heard::Notice(line) => {
                        if let Some(notice) = self.replica.hear(&line) {
                            self.heed(notice, &mut deliveries);
                        }
                    }
                    Heard::Listening => {
                        tracing::warn!(
                            "notices from the other replicas may have been missed: \
                             subscriptions resume from their cursors, and sessions are read again"
                        );
                        deliveries.clear();
                        self.sessions.forget_all();
                        self.hub.cut_all();
                    }
                }
            }
            self.push_heard(deliveries).await;
        }
    }

    /// Acts on one notice; a delivery to users with sessions here is kept
    /// in `deliveries`, to be read with the rest of the batch.
    fn heed(&self, notice: Notice, deliveries: &mut Deliveries) {
        match notice {
            Notice::Delivered { group, seq, users } => {
                let here: Vec<String> = users
                    .into_iter()
                    .filter(|u| self.hub.has_sessions(u))
                    .collect();
                tracing::debug!(%group, seq, sessions_here = ?here, "heard a delivery");
                if !here.is_empty() && seq > 0 {
                    deliveries
                        .entry(group)
                        .or_default()
                        .entry(seq)
                        .or_default()
                        .extend(here);
                }
            }
            Notice::Waiting { destination } => self.outbox.wake(&destination),
            Notice::Judged {
                submitted,
                verdict,
                unclaimed,
            } => {
                let Some(verdict) = Verdict::from_wire(&verdict) else {
                    return;
                };
                let claimed = self.verdicts.hand_over(&submitted.message_id, &verdict);
                if unclaimed && !claimed {
                    self.verdicts.tell_sender(&submitted, &verdict);
                }
            }
            Notice::Revoked { access_hash } => self.sessions.forget(&access_hash),
        }
    }

    /// Reads each group's heard seqs, page by page from the first, and
    /// pushes them. A read that fails is left to the subscriptions' resync.
    async fn push_heard(&self, deliveries: Deliveries) {
        for (group, seqs) in deliveries {
            let (Some(&first), Some(&last)) = (seqs.keys().next(), seqs.keys().next_back()) else {
                continue;
            };
            let mut after = first - 1;
            while after < last {
                let read_group = group.clone();
                let page = self
                    .dc
                    .read(move |tx| {
                        tx.page(&read_group, after, MAX_HISTORY_PAGE, HISTORY_PAGE_BYTES)
                    })
                    .await;
                let page = match page {
                    Ok(page) if !page.messages.is_empty() => page,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(%err, %group, "deliveries announced by another replica are unreadable");
                        break;
                    }
                };
                for delivery in &page.messages {
                    for user in seqs.get(&delivery.seq).into_iter().flatten() {
                        self.hub.push(user, delivery);
                    }
                    after = delivery.seq;
                }
                if !page.more {
                    break;
                }
            }
        }
    }
}
