//! What this replica does with what the region's other replicas announce
//! (see `service_center::replicas`): it pushes their deliveries to its own
//! sessions, carries the outbox items of the destinations it leases,
//! answers the `Send` calls waiting here, and forgets revoked sessions.

use tokio::sync::mpsc;

use super::BusinessCenter;
use crate::limits::HISTORY_PAGE_BYTES;
use crate::service_center::data_center::postgres::listen::Heard;
use crate::service_center::replicas::Notice;
use crate::service_center::verdicts::Verdict;

impl BusinessCenter {
    /// Hears until the listener ends (the data center is dropped) or the
    /// business center stops.
    pub(super) async fn hear(self, mut heard: mpsc::Receiver<Heard>) {
        while let Some(heard) = heard.recv().await {
            match heard {
                Heard::Notice(line) => {
                    if let Some(notice) = self.replica.hear(&line) {
                        self.heed(notice).await;
                    }
                }
                Heard::Listening => {
                    tracing::warn!(
                        "notices from the other replicas may have been missed: subscriptions \
                         resume from their cursors, and sessions are read again"
                    );
                    self.sessions.forget_all();
                    self.hub.cut_all();
                }
            }
        }
    }

    async fn heed(&self, notice: Notice) {
        match notice {
            Notice::Delivered { group, seq, users } => {
                let here: Vec<String> = users
                    .into_iter()
                    .filter(|u| self.hub.has_sessions(u))
                    .collect();
                tracing::debug!(%group, seq, sessions_here = ?here, "heard a delivery");
                if here.is_empty() || seq == 0 {
                    return;
                }
                let read = self
                    .dc
                    .read(move |tx| tx.page(&group, seq - 1, 1, HISTORY_PAGE_BYTES))
                    .await;
                match read {
                    Ok(page) => {
                        if let Some(delivery) = page.messages.into_iter().find(|m| m.seq == seq) {
                            for user in &here {
                                self.hub.push(user, &delivery);
                            }
                        }
                    }
                    // The subscriptions catch up at the next delivery.
                    Err(err) => {
                        tracing::warn!(%err, "a delivery announced by another replica is unreadable")
                    }
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
}
