//! Send and deliver group messages.
//!
//! A send is durable here before anything else. The group's home assigns
//! the next `seq` (or refuses it) and fans the message out once per
//! recipient region; each receiving region stores it and pushes it to its
//! connected sessions, and forwards it to where a roaming recipient is
//! attached. The home's verdict travels back in the reply to the outbox
//! batch that carried the submission (see `service_center::verdicts`), and
//! the `Send` call answers with it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::effects::{Effects, Stored};
use super::{BusinessCenter, check_len, unexpected};
use crate::Error;
use crate::ids::Id;
use crate::limits::{
    DEFAULT_HISTORY_PAGE, HISTORY_PAGE_BYTES, MAX_BODY_BYTES, MAX_HISTORY_PAGE,
    MAX_IDEMPOTENCY_KEY_BYTES, MAX_SEQ, SEND_VERDICT_WAIT,
};
use crate::proto::client_api::{Delivery, HistoryReply, HistoryRequest, SendReply, SendRequest};
use crate::proto::peer_api::{
    CarryOrder, Distribution, History, Item, Submission, Verdict as WireVerdict, data_reply,
    data_request, item,
};
use crate::service_center::data_center::Tx;
use crate::service_center::data_center::tx::group_not_found;
use crate::service_center::verdicts::Verdict;
use crate::telemetry::traces;

impl BusinessCenter {
    /// Accepts a message from `actor` and answers with the home's verdict:
    /// at once for a group homed here (sequenced in the same commit); for a
    /// group homed elsewhere once the home has answered through the outbox,
    /// or `queued` after [`SEND_VERDICT_WAIT`] (at once when the home is
    /// known to be unreachable). A retry with the same key answers with the
    /// verdict the first send got.
    pub async fn send(&self, actor: &Id, request: SendRequest) -> Result<SendReply, Error> {
        let group = Id::parse("group", &request.group)?;
        if request.body.is_empty() {
            return Err(Error::InvalidArgument("message body is empty".into()));
        }
        check_len("message body", &request.body, MAX_BODY_BYTES)?;
        check_len(
            "idempotency key",
            &request.idempotency_key,
            MAX_IDEMPOTENCY_KEY_BYTES,
        )?;
        let submission = Submission {
            message_id: uuid::Uuid::now_v7().to_string(),
            group: group.to_string(),
            sender: actor.to_string(),
            body: request.body,
            idempotency_key: request.idempotency_key,
            sent_at_ms: crate::now_ms(),
            origin: self.region.to_string(),
            sender_assertion: self.assertions.get(actor).await?,
        };
        let region = self.region.clone();
        let local = self.is_local(&group);
        if !local && !self.link.in_mesh(group.home()) {
            // Its outbox items would be dropped unsent (a departed region's):
            // refuse now rather than accept what can never be delivered.
            return Err(Error::NotFound(format!(
                "group {group} does not exist: region {} is not in this mesh",
                group.home()
            )));
        }
        // Wait from before the write: once it commits, the outbox may carry
        // the submission and the home answer at any moment.
        let fresh_id = submission.message_id.clone();
        let waiter = (!local).then(|| self.verdicts.wait_for(&fresh_id));
        let trace = traces::current();
        let replica = self.replica.clone();
        let (accepted, effects) = self
            .dc
            .after_commit(self.in_order.taker(|(_, effects)| effects))
            .write(move |tx| {
                let s = &submission;
                let key = (!s.idempotency_key.is_empty()).then_some(s.idempotency_key.as_str());
                let earlier = match key {
                    Some(key) => match tx.accepted_by_key(&s.sender, &s.group, key)? {
                        Some(id) => Some(id),
                        // At the home, the key may have come through another region first.
                        None if local => tx.sequenced_by_key(&s.group, &s.sender, key)?,
                        None => None,
                    },
                    None => None,
                };
                if let Some(earlier) = earlier {
                    return Ok((retried(tx, local, earlier)?, Effects::default()));
                }
                let mut effects = Effects::traced(trace);
                let accepted = if local {
                    // A message id made just now cannot have been sequenced.
                    let (message_id, seq) = sequence(tx, &region, s, Fresh::Yes, &mut effects)?;
                    Accepted::Answered(Ok(SendReply {
                        message_id,
                        seq,
                        duplicate: false,
                        queued: false,
                    }))
                } else {
                    let home = s.group.rsplit('@').next().unwrap_or_default().to_owned();
                    let item = Item {
                        kind: Some(item::Kind::Submission(s.clone())),
                    };
                    effects.enqueue(tx, &home, item)?;
                    Accepted::AwaitingHome {
                        message_id: s.message_id.clone(),
                        duplicate: false,
                    }
                };
                tx.insert_accepted(&s.message_id, &s.group, &s.sender, key, s.sent_at_ms)?;
                effects.announce(tx, &replica)?;
                Ok((accepted, effects))
            })
            .await?;
        self.apply(effects);
        let (message_id, duplicate) = match accepted {
            Accepted::Answered(reply) => return reply,
            Accepted::AwaitingHome {
                message_id,
                duplicate,
            } => (message_id, duplicate),
        };
        let waiter = match waiter {
            Some(waiter) if message_id == fresh_id => waiter,
            _ => {
                // A retry of an earlier send whose verdict had not been
                // recorded when the write looked: wait for it, then look
                // again, so that one recorded in between is not missed.
                let waiter = self.verdicts.wait_for(&message_id);
                let id = message_id.clone();
                let recorded = self.dc.read(move |tx| tx.verdict_of(&id)).await?;
                if let Some(verdict) = recorded.as_ref().and_then(Verdict::from_wire) {
                    return answer(&message_id, duplicate, verdict);
                }
                waiter
            }
        };
        let bound = if self.outbox.is_failing(group.home()) {
            // The home cannot be asked now: say so at once.
            Duration::ZERO
        } else {
            SEND_VERDICT_WAIT
        };
        match waiter.verdict(bound).await {
            Some(verdict) => answer(&message_id, duplicate, verdict),
            None => Ok(SendReply {
                message_id,
                seq: 0,
                duplicate,
                queued: true,
            }),
        }
    }

    /// Carries out what a committed write left to do (see
    /// [`Effects::carry_out`]).
    pub(super) fn apply(&self, effects: Effects) {
        effects.carry_out(&self.hub, &self.outbox);
    }

    /// Applies items that another region's outbox carried here, and
    /// returns the verdict on each submission among them, in order. A
    /// submission this region refuses (no such group, not a member) is
    /// acknowledged all the same, so that it cannot block the sender's
    /// outbox; its verdict tells the sending region why. A batch with an
    /// `order` applies only in its turn (`Runs::take_batch`), tried for up
    /// to [`TURN_WAIT`](super::turns::TURN_WAIT): `None` when it was not,
    /// and nothing was applied.
    pub async fn receive(
        &self,
        source: String,
        items: Vec<Item>,
        order: Option<CarryOrder>,
    ) -> Result<Option<Vec<WireVerdict>>, Error> {
        let (source, items): (Arc<str>, _) = (source.into(), Arc::new(items));
        let attempt = || self.apply_carried(source.clone(), items.clone(), order);
        let applied = self.turns.in_turn(super::turns::TURN_WAIT, attempt).await?;
        if order.is_some() && applied.is_some() {
            self.turns.taken();
        }
        Ok(applied)
    }

    /// One try at applying carried items in one commit; `None` when the
    /// batch is not in its run's turn.
    async fn apply_carried(
        &self,
        source: Arc<str>,
        items: Arc<Vec<Item>>,
        order: Option<CarryOrder>,
    ) -> Result<Option<Vec<WireVerdict>>, Error> {
        let region = self.region.clone();
        let trace = traces::current();
        let replica = self.replica.clone();
        let early = self.in_order.early();
        let (verdicts, effects) = self
            .dc
            .after_commit(self.in_order.taker(|(_, effects)| effects))
            .write(move |tx| {
                let mut effects = Effects::traced(trace);
                if let Some(order) = order
                    && !tx.take_batch(&source, order.chain, order.batch)?
                {
                    return Ok((None, effects));
                }
                let mut verdicts = Vec::new();
                for item in items.iter() {
                    match &item.kind {
                        Some(item::Kind::Submission(s)) => {
                            let verdict = match sequence(tx, &region, s, Fresh::No, &mut effects) {
                                Ok((message_id, seq)) => Verdict::Sequenced { message_id, seq },
                                Err(err) if err.is_transient() => return Err(err),
                                Err(err) => {
                                    tracing::info!(%err, message = %s.message_id, from = %source, "submission refused");
                                    Verdict::Refused(err)
                                }
                            };
                            verdicts.push(verdict.to_wire(&s.message_id));
                        }
                        Some(item::Kind::Distribution(d)) => distribute(tx, &region, d, &mut effects)?,
                        None => tracing::warn!(from = %source, "empty outbox item ignored"),
                    }
                }
                effects.announce(tx, &replica)?;
                early.push(&mut effects);
                Ok((Some(verdicts), effects))
            })
            .await?;
        self.apply(effects);
        Ok(verdicts)
    }

    /// One page of a group's messages after a `seq`, read at the group's
    /// home: at most `limit` of them and [`HISTORY_PAGE_BYTES`], so that the
    /// reply fits a client's and a peer's receive limit; `more` says to ask
    /// again after the last one.
    pub async fn history(
        &self,
        actor: &Id,
        request: HistoryRequest,
    ) -> Result<HistoryReply, Error> {
        let group = Id::parse("group", &request.group)?;
        check_seq("after_seq", request.after_seq)?;
        if request.limit > MAX_HISTORY_PAGE {
            return Err(Error::InvalidArgument(format!(
                "limit is at most {MAX_HISTORY_PAGE}"
            )));
        }
        if !self.is_local(&group) {
            let op = data_request::Op::History(History {
                actor: actor.to_string(),
                query: Some(request),
            });
            return match self.ask_home_as(group.home(), actor, op).await? {
                data_reply::Result::History(reply) => Ok(reply),
                _ => Err(unexpected(group.home())),
            };
        }
        let actor = actor.to_string();
        let limit = if request.limit == 0 {
            DEFAULT_HISTORY_PAGE
        } else {
            request.limit
        };
        self.dc
            .read(move |tx| {
                let g = &request.group;
                if tx.role(g, &actor)?.is_none() {
                    if !tx.group_exists(g)? {
                        return Err(group_not_found(g));
                    }
                    return Err(Error::PermissionDenied(format!(
                        "{actor} is not a member of group {g}"
                    )));
                }
                let page = tx.page(g, request.after_seq, limit, HISTORY_PAGE_BYTES)?;
                Ok(HistoryReply {
                    messages: page.messages,
                    more: page.more,
                })
            })
            .await
    }
}

/// Refuses a client's `seq` beyond what a group can reach ([`MAX_SEQ`]); the
/// data center stores seqs as signed 64-bit integers, so a larger one would
/// fail there as an internal error.
pub(super) fn check_seq(field: &str, seq: u64) -> Result<(), Error> {
    if seq > MAX_SEQ {
        return Err(Error::InvalidArgument(format!(
            "{field} is {seq}, beyond the largest seq {MAX_SEQ}"
        )));
    }
    Ok(())
}

/// What the write of a send decided.
enum Accepted {
    /// The answer is known: sequenced here, or the recorded verdict on an
    /// earlier send with the same key.
    Answered(Result<SendReply, Error>),
    /// Accepted here (now, or by an earlier send with the same key) for a
    /// group homed elsewhere, whose verdict has not come yet.
    AwaitingHome { message_id: String, duplicate: bool },
}

/// A retry of the send `earlier` (the same sender, group and key): its seq
/// when this region has it (sequenced here, or the communication record of
/// a member homed here), else the home's recorded verdict, else the wait.
fn retried(tx: &mut dyn Tx, local: bool, earlier: String) -> Result<Accepted, Error> {
    if let Some(seq) = tx.seq_of(&earlier)? {
        return Ok(Accepted::Answered(Ok(SendReply {
            message_id: earlier,
            seq,
            duplicate: true,
            queued: false,
        })));
    }
    if local {
        // Homed here, accepted here or sequenced for another region: its
        // seq is always stored with it.
        return Err(Error::Internal(format!("message {earlier} has no seq")));
    }
    let recorded = tx.verdict_of(&earlier)?;
    Ok(match recorded.as_ref().and_then(Verdict::from_wire) {
        Some(verdict) => Accepted::Answered(answer(&earlier, true, verdict)),
        None => Accepted::AwaitingHome {
            message_id: earlier,
            duplicate: true,
        },
    })
}

/// The reply to a send accepted here as `message_id`, from the home's
/// verdict: its seq (and the id it was sequenced as, which differs when the
/// key was sequenced before through another region), or its refusal.
fn answer(message_id: &str, duplicate: bool, verdict: Verdict) -> Result<SendReply, Error> {
    match verdict {
        Verdict::Sequenced {
            message_id: sequenced_as,
            seq,
        } => Ok(SendReply {
            duplicate: duplicate || sequenced_as != message_id,
            message_id: sequenced_as,
            seq,
            queued: false,
        }),
        Verdict::Refused(err) => Err(err),
    }
}

/// Whether a submission was accepted within this very write, at the home:
/// its message id cannot have been sequenced before, the caller has checked
/// its key, and records it in `accepted`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Yes,
    No,
}

/// At the group's home: gives a submission the next `seq` and fans it out.
/// Returns the message id and seq it is sequenced as: when it was
/// sequenced before (a resend), or its key was (a retry through another
/// region), those of that message, which is not sequenced again.
fn sequence(
    tx: &mut dyn Tx,
    region: &str,
    s: &Submission,
    fresh: Fresh,
    effects: &mut Effects,
) -> Result<(String, u64), Error> {
    // First, so that another replica's transaction cannot sequence in this
    // group between what this one reads and what it writes.
    let exists = tx.lock_group(&s.group)?;
    if fresh == Fresh::No
        && let Some(seq) = tx.seq_of(&s.message_id)?
    {
        return Ok((s.message_id.clone(), seq));
    }
    // A key is recorded once per message: in `accepted` when the send was
    // accepted here at the home, in `sequenced_keys` when it came from
    // another region. A fresh send's caller has looked in both.
    let key = s.idempotency_key.as_str();
    if !key.is_empty() && fresh == Fresh::No {
        let earlier = match tx.sequenced_by_key(&s.group, &s.sender, key)? {
            Some(earlier) => Some(earlier),
            None => tx.accepted_by_key(&s.sender, &s.group, key)?,
        };
        if let Some(earlier) = earlier {
            let seq = tx
                .seq_of(&earlier)?
                .ok_or_else(|| Error::Internal(format!("message {earlier} has no seq")))?;
            return Ok((earlier, seq));
        }
    }
    if tx.role(&s.group, &s.sender)?.is_none() {
        if !exists {
            return Err(group_not_found(&s.group));
        }
        return Err(Error::PermissionDenied(format!(
            "{} is not a member of group {}",
            s.sender, s.group
        )));
    }
    let delivery = Delivery {
        group: s.group.clone(),
        seq: tx.next_seq(&s.group)?,
        message_id: s.message_id.clone(),
        sender: s.sender.clone(),
        body: s.body.clone(),
        sent_at_ms: s.sent_at_ms,
    };
    tx.insert_message(&delivery)?;
    if !key.is_empty() && fresh == Fresh::No {
        tx.insert_sequenced_key(&s.group, &s.sender, key, &s.message_id)?;
    }
    // Once per recipient region: the message and that region's recipients.
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for member in tx.member_ids(&s.group)? {
        let home = member.rsplit('@').next().unwrap_or_default().to_owned();
        by_region.entry(home).or_default().push(member);
    }
    for (home, recipients) in by_region {
        let distribution = Distribution {
            message: Some(delivery.clone()),
            recipients,
            roaming: false,
        };
        if home == region {
            deliver_here(tx, region, &distribution, Stored::Now, effects)?;
        } else {
            effects.enqueue(
                tx,
                &home,
                Item {
                    kind: Some(item::Kind::Distribution(distribution)),
                },
            )?;
        }
    }
    Ok((delivery.message_id, delivery.seq))
}

/// In a recipient region: stores the record and delivers it. At the group's
/// own home (a roaming forward to a recipient attached there) the record is
/// the home's: it is delivered only if it is the message sequenced here.
fn distribute(
    tx: &mut dyn Tx,
    region: &str,
    d: &Distribution,
    effects: &mut Effects,
) -> Result<(), Error> {
    let message = d
        .message
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("distribution without a message".into()))?;
    let homed_here = message.group.rsplit('@').next() == Some(region);
    if homed_here {
        if tx.seq_of(&message.message_id)? != Some(message.seq) {
            tracing::warn!(group = %message.group, seq = message.seq, "forward of a message this home never sequenced ignored");
            return Ok(());
        }
    } else {
        tx.insert_message(message)?;
    }
    deliver_here(tx, region, d, Stored::AtHome, effects)
}

/// Pushes to this region's sessions of the recipients, and forwards the
/// message to where a recipient of this home is attached, if elsewhere.
fn deliver_here(
    tx: &mut dyn Tx,
    region: &str,
    d: &Distribution,
    stored: Stored,
    effects: &mut Effects,
) -> Result<(), Error> {
    let message = d.message.as_ref().expect("checked by the caller");
    effects.push(message, &d.recipients, stored);
    if d.roaming {
        return Ok(());
    }
    // One statement for all the recipients, not one each: it runs inside
    // the write, on SQLite on the single writer thread.
    let elsewhere: HashMap<String, String> = tx
        .attached_elsewhere(&d.recipients, region)?
        .into_iter()
        .collect();
    let mut roaming: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if !elsewhere.is_empty() {
        for recipient in &d.recipients {
            if let Some(attached) = elsewhere.get(recipient) {
                roaming.entry(attached).or_default().push(recipient.clone());
            }
        }
    }
    for (attached, recipients) in roaming {
        let forward = Distribution {
            message: Some(message.clone()),
            recipients,
            roaming: true,
        };
        effects.enqueue(
            tx,
            attached,
            Item {
                kind: Some(item::Kind::Distribution(forward)),
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::client_api::CreateGroupRequest;
    use crate::service_center::business_center::{for_tests, with_group_joined_from_us};

    fn submission(id: &str, group: &str, sender: &str) -> Item {
        Item {
            kind: Some(item::Kind::Submission(Submission {
                message_id: id.into(),
                group: group.into(),
                sender: sender.into(),
                body: "hi".into(),
                idempotency_key: "k".into(),
                sent_at_ms: 1,
                origin: "us".into(),
                sender_assertion: None,
            })),
        }
    }

    fn verdicts(wire: Vec<WireVerdict>) -> Vec<(String, Verdict)> {
        wire.iter()
            .map(|v| {
                (
                    v.message_id.clone(),
                    Verdict::from_wire(v).expect("a verdict"),
                )
            })
            .collect()
    }

    /// Sends that commit together reach a subscriber in seq order, so its
    /// subscription never has a gap to read from history (see `effects::InOrder`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_are_pushed_in_seq_order() {
        use crate::proto::client_api::event;

        let (_dir, center) = for_tests("eu").await;
        let ann = Id::parse("user", "ann@eu").unwrap();
        let bob = Id::parse("user", "bob@eu").unwrap();
        let request = CreateGroupRequest {
            name: "g".into(),
            ..Default::default()
        };
        center.create_group(&ann, request).await.unwrap();
        center.join_group(&bob, "g@eu").await.unwrap();
        let mut live = center.hub.attach("bob@eu").unwrap();
        const SENDS: u64 = 200;
        let sends: Vec<_> = (0..SENDS)
            .map(|n| {
                let (center, ann) = (center.clone(), ann.clone());
                tokio::spawn(async move {
                    let request = SendRequest {
                        group: "g@eu".into(),
                        body: format!("m{n}"),
                        idempotency_key: format!("k{n}"),
                    };
                    center.send(&ann, request).await.unwrap().seq
                })
            })
            .collect();
        for send in sends {
            send.await.unwrap();
        }
        let mut seqs = Vec::new();
        while seqs.len() < SENDS as usize {
            let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
                .await
                .expect("every delivery within 10 s")
                .expect("still subscribed");
            if let Some(event::Kind::Delivery(d)) = event.kind {
                seqs.push(d.seq);
            }
        }
        assert_eq!(seqs, (1..=SENDS).collect::<Vec<_>>());
    }

    /// A receiving region pushes its record of a message as soon as its
    /// write has applied it, and does not wait for the commit (see
    /// `effects::Early`): here a write committed with it waits for the push,
    /// which it would wait for in vain if the push followed the commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiving_region_pushes_before_the_commit_that_stores_it() {
        use crate::proto::client_api::{Event, event};
        use std::sync::mpsc as sync;

        let (_dir, center) = for_tests("us").await;
        let mut live = center.hub.attach("bob@us").unwrap();
        // Hold the writer, so that the receive and the waiting write
        // queue up behind it and commit together, in that order.
        let (held, holding) = sync::channel();
        let (release, released) = sync::channel::<()>();
        let dc = center.dc.clone();
        let holder = tokio::spawn(async move {
            dc.write(move |_| {
                held.send(()).expect("the test waits");
                released.recv().expect("the test releases");
                Ok(())
            })
            .await
        });
        tokio::task::spawn_blocking(move || holding.recv())
            .await
            .unwrap()
            .expect("the writer holds");
        let message = Delivery {
            group: "g@eu".into(),
            seq: 1,
            message_id: "0190b8a4-6d3e-7c2a-9f1b-000000000001".into(),
            sender: "ann@eu".into(),
            body: "hi".into(),
            sent_at_ms: 1,
        };
        let distribution = Item {
            kind: Some(item::Kind::Distribution(Distribution {
                message: Some(message.clone()),
                recipients: vec!["bob@us".into()],
                roaming: false,
            })),
        };
        let mut receive = Box::pin(center.receive("eu".into(), vec![distribution], None));
        assert!(futures::poll!(&mut receive).is_pending(), "queued");
        let (seen, seeing) = sync::channel();
        tokio::spawn(async move {
            let _ = seen.send(live.recv().await);
        });
        let mut waiting = Box::pin(
            center
                .dc
                .write(move |_| Ok(seeing.recv_timeout(Duration::from_secs(10)))),
        );
        assert!(futures::poll!(&mut waiting).is_pending(), "queued");
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let (received, waited) = tokio::join!(receive, waiting);
        assert!(received.unwrap().is_some(), "applied");
        let pushed = Some(Event {
            kind: Some(event::Kind::Delivery(message)),
        });
        assert_eq!(
            waited.unwrap(),
            Ok(pushed),
            "pushed while the write that stores it was still open"
        );
    }

    /// At the home: a resent submission and a retry of its key under
    /// another id get the first one's id and seq, and are not sequenced
    /// again; refusals are verdicts, not failures of the batch.
    #[tokio::test]
    async fn the_home_judges_every_submission_and_sequences_a_key_once() {
        let (_dir, center, ann) = with_group_joined_from_us().await;

        let first = submission("m1", "g@eu", "bob@us");
        let sequenced = Verdict::Sequenced {
            message_id: "m1".into(),
            seq: 1,
        };
        let got = center.receive("us".into(), vec![first.clone()], None).await;
        assert_eq!(
            verdicts(got.unwrap().expect("no order: applied")),
            [("m1".into(), sequenced.clone())]
        );
        let batch = vec![
            first,
            submission("m2", "g@eu", "bob@us"),
            submission("m3", "nope@eu", "bob@us"),
            submission("m4", "g@eu", "cat@ap"),
        ];
        let got = center.receive("us".into(), batch, None).await.unwrap();
        let got = verdicts(got.expect("no order: applied"));
        assert_eq!(got[0], ("m1".into(), sequenced.clone()), "resent");
        assert_eq!(
            got[1],
            ("m2".into(), sequenced),
            "the key, through another send"
        );
        assert_eq!(
            got[2],
            (
                "m3".into(),
                Verdict::Refused(Error::NotFound("group nope@eu does not exist".into()))
            )
        );
        assert!(
            matches!(&got[3].1, Verdict::Refused(Error::PermissionDenied(m)) if m == "cat@ap is not a member of group g@eu"),
            "{got:?}"
        );
        let history = HistoryRequest {
            group: "g@eu".into(),
            ..Default::default()
        };
        let messages = center.history(&ann, history).await.unwrap().messages;
        assert_eq!(messages.len(), 1, "sequenced once: {messages:?}");
    }

    /// Batches of a run apply in their turn: one ahead of it applies
    /// nothing (its submission is not sequenced), and applies once the
    /// batch before it has.
    #[tokio::test]
    async fn a_batch_of_a_run_applies_only_in_its_turn() {
        let (_dir, center, _ann) = with_group_joined_from_us().await;
        let order = |batch| Some(CarryOrder { chain: 42, batch });
        let mut second = submission("m2", "g@eu", "bob@us");
        if let Some(item::Kind::Submission(s)) = &mut second.kind {
            s.idempotency_key = "k2".into();
        }
        let early = center.receive("us".into(), vec![second.clone()], order(1));
        assert_eq!(early.await.unwrap(), None, "ahead of its turn");
        let first = center.receive(
            "us".into(),
            vec![submission("m1", "g@eu", "bob@us")],
            order(0),
        );
        let seq_of = |got: Option<Vec<WireVerdict>>| match &verdicts(got.expect("applied"))[..] {
            [(_, Verdict::Sequenced { seq, .. })] => *seq,
            other => panic!("{other:?}"),
        };
        assert_eq!(seq_of(first.await.unwrap()), 1);
        let then = center.receive("us".into(), vec![second], order(1));
        assert_eq!(seq_of(then.await.unwrap()), 2, "in its turn, after m1");
    }
}
