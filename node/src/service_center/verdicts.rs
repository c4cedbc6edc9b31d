//! The verdicts of groups' homes on the sends this region accepted for them
//! (docs/ARCHITECTURE.md §3, flow 5). A home answers each submission its
//! outbox carried, in the reply that acknowledges the batch: sequenced, with
//! the canonical message id and seq, or refused, with the reason. Here the
//! outbox worker hands each verdict to the `Send` calls waiting for it (one
//! oneshot channel per call, keyed by message id: no polling), and pushes
//! the ones no call was waiting for to the sender's subscriptions as events.
//! The data center keeps every verdict on the send's `accepted` row, so a
//! retry with the same key answers with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::hub::Hub;
use crate::Error;
use crate::limits::{MAX_MESSAGE_ID_BYTES, MAX_SEQ};
use crate::proto::client_api::{Refused, SendVerdict, Sequenced, send_verdict};
use crate::proto::peer_api::{self, Item, item, verdict};

/// A home's verdict on one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sequenced as `message_id` (the id the sender's key was first
    /// sequenced under, which may be another send's) at `seq`.
    Sequenced { message_id: String, seq: u64 },
    /// Refused, with the reason (NOT_FOUND, PERMISSION_DENIED, ...).
    Refused(Error),
}

impl Verdict {
    /// The home's answer on the wire, for the submission `message_id`.
    pub fn to_wire(&self, message_id: &str) -> peer_api::Verdict {
        let outcome = match self {
            Verdict::Sequenced { message_id, seq } => verdict::Outcome::Sequenced(Sequenced {
                message_id: message_id.clone(),
                seq: *seq,
            }),
            Verdict::Refused(err) => verdict::Outcome::Refused(err.clone().into()),
        };
        peer_api::Verdict {
            message_id: message_id.to_owned(),
            outcome: Some(outcome),
        }
    }

    /// Reads a home's answer; `None` when it says neither (a malformed or
    /// unknown outcome, an id longer than [`MAX_MESSAGE_ID_BYTES`] or a seq
    /// beyond [`MAX_SEQ`]), which is then treated as no answer.
    pub fn from_wire(wire: &peer_api::Verdict) -> Option<Verdict> {
        match wire.outcome.as_ref()? {
            verdict::Outcome::Sequenced(s)
                if !s.message_id.is_empty()
                    && s.message_id.len() <= MAX_MESSAGE_ID_BYTES
                    && (1..=MAX_SEQ).contains(&s.seq) =>
            {
                Some(Verdict::Sequenced {
                    message_id: s.message_id.clone(),
                    seq: s.seq,
                })
            }
            verdict::Outcome::Sequenced(_) => None,
            verdict::Outcome::Refused(failure) => Some(Verdict::Refused(failure.clone().into())),
        }
    }
}

/// A submission as its sending region knows it, for the event that tells
/// the sender its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub message_id: String,
    pub sender: String,
    pub group: String,
    pub idempotency_key: String,
}

impl Submitted {
    /// The submissions among outbox items, in order.
    pub fn among(items: &[Item]) -> Vec<Submitted> {
        items
            .iter()
            .filter_map(|i| match &i.kind {
                Some(item::Kind::Submission(s)) => Some(Submitted {
                    message_id: s.message_id.clone(),
                    sender: s.sender.clone(),
                    group: s.group.clone(),
                    idempotency_key: s.idempotency_key.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The event that tells the sender the verdict.
    pub fn event(&self, verdict: &Verdict) -> SendVerdict {
        let outcome = match verdict {
            Verdict::Sequenced { message_id, seq } => send_verdict::Outcome::Sequenced(Sequenced {
                message_id: message_id.clone(),
                seq: *seq,
            }),
            Verdict::Refused(err) => {
                // The client sees the code its Send call would have failed with.
                let status = tonic::Status::from(err.clone());
                send_verdict::Outcome::Refused(Refused {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                })
            }
        };
        SendVerdict {
            group: self.group.clone(),
            queued_id: self.message_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            outcome: Some(outcome),
        }
    }
}

/// Pairs a home's verdicts with the submissions it was carried: a verdict
/// on anything else, or none at all, is ignored (the home may only judge
/// what it was sent).
pub fn judged(submitted: Vec<Submitted>, wire: &[peer_api::Verdict]) -> Vec<(Submitted, Verdict)> {
    let mut by_id: HashMap<&str, Verdict> = wire
        .iter()
        .filter_map(|v| Some((v.message_id.as_str(), Verdict::from_wire(v)?)))
        .collect();
    submitted
        .into_iter()
        .filter_map(|s| {
            let verdict = by_id.remove(s.message_id.as_str())?;
            Some((s, verdict))
        })
        .collect()
}

type Waiting = HashMap<String, Vec<(u64, oneshot::Sender<Verdict>)>>;

/// The `Send` calls waiting for verdicts, and the hub that tells the
/// senders the rest. Clones share them.
#[derive(Clone)]
pub struct Verdicts {
    waiting: Arc<Mutex<Waiting>>,
    next_id: Arc<AtomicU64>,
    hub: Hub,
}

impl Verdicts {
    pub fn new(hub: Hub) -> Self {
        Self {
            waiting: Arc::default(),
            next_id: Arc::default(),
            hub,
        }
    }

    /// Starts waiting for the verdict on `message_id`. Register before
    /// looking for a recorded verdict: one that is recorded after the look
    /// is then handed to this waiter (see [`Verdicts::hand_over`]).
    pub fn wait_for(&self, message_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiting
            .lock()
            .expect("verdict waiters")
            .entry(message_id.to_owned())
            .or_default()
            .push((id, tx));
        Waiter {
            verdicts: self.clone(),
            message_id: message_id.to_owned(),
            id,
            rx,
        }
    }

    /// Hands `verdict` to every call waiting for `message_id`; returns
    /// whether there was one.
    pub fn hand_over(&self, message_id: &str, verdict: &Verdict) -> bool {
        let waiters = self
            .waiting
            .lock()
            .expect("verdict waiters")
            .remove(message_id);
        let mut handed = false;
        for (_, tx) in waiters.into_iter().flatten() {
            handed |= tx.send(verdict.clone()).is_ok();
        }
        handed
    }

    /// Tells the sender, on their live subscriptions here, a verdict that
    /// no `Send` call carried.
    pub fn tell_sender(&self, submitted: &Submitted, verdict: &Verdict) {
        self.hub
            .push_verdict(&submitted.sender, &submitted.event(verdict));
    }

    /// Calls waiting now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .expect("verdict waiters")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn forget(&self, message_id: &str, id: u64) {
        let mut waiting = self.waiting.lock().expect("verdict waiters");
        if let Some(list) = waiting.get_mut(message_id) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                waiting.remove(message_id);
            }
        }
    }
}

/// One `Send` call's wait for a verdict; it stops waiting when dropped (for
/// instance when the client hangs up).
pub struct Waiter {
    verdicts: Verdicts,
    message_id: String,
    id: u64,
    rx: oneshot::Receiver<Verdict>,
}

impl Waiter {
    /// The verdict, if it comes within `bound`.
    pub async fn verdict(mut self, bound: Duration) -> Option<Verdict> {
        if let Ok(Ok(verdict)) = tokio::time::timeout(bound, &mut self.rx).await {
            return Some(verdict);
        }
        // Stop waiting first: a verdict handed over meanwhile is then in
        // the channel, and no later one can be.
        self.verdicts.forget(&self.message_id, self.id);
        self.rx.try_recv().ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.verdicts.forget(&self.message_id, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequenced(seq: u64) -> Verdict {
        Verdict::Sequenced {
            message_id: "m1".into(),
            seq,
        }
    }

    #[tokio::test]
    async fn a_waiting_call_gets_its_verdict_and_a_late_one_gets_none() {
        let verdicts = Verdicts::new(Hub::default());
        let first = verdicts.wait_for("m1");
        let second = verdicts.wait_for("m1");
        assert_eq!(verdicts.waiting(), 2);
        assert!(verdicts.hand_over("m1", &sequenced(3)));
        assert_eq!(verdicts.waiting(), 0);
        let wait = Duration::from_secs(5);
        assert_eq!(first.verdict(wait).await, Some(sequenced(3)));
        assert_eq!(second.verdict(wait).await, Some(sequenced(3)));

        let late = verdicts.wait_for("m2");
        assert_eq!(late.verdict(Duration::from_millis(10)).await, None);
        assert_eq!(verdicts.waiting(), 0, "a timed-out call stops waiting");
        assert!(!verdicts.hand_over("m2", &sequenced(4)), "nobody waits");

        drop(verdicts.wait_for("m3"));
        assert_eq!(verdicts.waiting(), 0, "a dropped call stops waiting");
    }

    #[test]
    fn verdicts_only_count_for_the_submissions_carried() {
        let submitted = |id: &str| Submitted {
            message_id: id.into(),
            sender: "ann@eu".into(),
            group: "g@us".into(),
            idempotency_key: String::new(),
        };
        let refused = Verdict::Refused(Error::NotFound("group g@us does not exist".into()));
        let oversized = Verdict::Sequenced {
            message_id: "x".repeat(MAX_MESSAGE_ID_BYTES + 1),
            seq: 9,
        };
        let wire = vec![
            sequenced(7).to_wire("a"),
            oversized.to_wire("a2"),
            sequenced(u64::MAX).to_wire("a3"),
            refused.to_wire("b"),
            sequenced(8).to_wire("not-sent"),
            peer_api::Verdict {
                message_id: "c".into(),
                outcome: None,
            },
        ];
        let got = judged(
            vec![
                submitted("a"),
                submitted("a2"),
                submitted("a3"),
                submitted("b"),
                submitted("c"),
            ],
            &wire,
        );
        let got: Vec<_> = got.into_iter().map(|(s, v)| (s.message_id, v)).collect();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), sequenced(7)),
                ("b".to_owned(), refused.clone())
            ]
        );
        let event = submitted("b").event(&refused);
        match event.outcome {
            Some(send_verdict::Outcome::Refused(r)) => {
                assert_eq!(r.code, tonic::Code::NotFound as i32);
                assert_eq!(r.message, "group g@us does not exist");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(event.queued_id, "b");
    }
}
