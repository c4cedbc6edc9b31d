//! Requests that arrived from other regions through the roaming system, for
//! records whose home is this region.

use super::BusinessCenter;
use super::groups::GroupOp;
use crate::Error;
use crate::ids::Id;
use crate::proto::peer_api::{
    BusinessReply, BusinessRequest, CarryOrder, DataReply, DataRequest, Item, data_reply,
    data_request, item,
};

impl BusinessCenter {
    /// Serves a data-service request from another region.
    pub async fn handle_data(&self, request: DataRequest) -> DataReply {
        let result = match self.dispatch_data(request).await {
            Ok(result) => result,
            Err(err) => data_reply::Result::Failure(err.into()),
        };
        DataReply {
            result: Some(result),
        }
    }

    async fn dispatch_data(&self, request: DataRequest) -> Result<data_reply::Result, Error> {
        use data_request::Op;
        // The roaming system proved the source region.
        let source = request
            .envelope
            .as_ref()
            .map(|e| e.source.clone())
            .unwrap_or_default();
        let shown = request.actor_assertion.as_ref();
        let now = self.clock.now_ms();
        // The source may act only for its own users and for those whose
        // home vouches that they logged in there.
        let actor = |actor: &str| -> Result<Id, Error> {
            let id = Id::parse("user", actor)?;
            self.assertions.check(&id, &source, shown, now)?;
            Ok(id)
        };
        let op = request
            .op
            .ok_or_else(|| Error::InvalidArgument("data request without an operation".into()))?;
        Ok(match op {
            Op::Register(r) => {
                let id = self.home_id("user", &r.user)?;
                data_reply::Result::Registered(self.register(id.as_str(), &r.password).await?)
            }
            Op::VerifyLogin(v) => {
                let id = self.home_id("user", &v.user)?;
                if v.attach_region != source {
                    return Err(Error::PermissionDenied(format!(
                        "region {source} may not log {id} in at region {}",
                        v.attach_region
                    )));
                }
                data_reply::Result::Verified(
                    self.verify_login(&id, &v.password, &v.attach_region)
                        .await?,
                )
            }
            Op::GetGroup(g) => {
                self.group_reply(&actor(&g.actor)?, &g.group, GroupOp::Get)
                    .await?
            }
            Op::UpdateGroup(u) => {
                let update = u
                    .update
                    .ok_or_else(|| Error::InvalidArgument("update without a body".into()))?;
                // The limits a client's update has, for a peer's too.
                super::groups::validate_update(&update)?;
                let group = update.group.clone();
                self.group_reply(&actor(&u.actor)?, &group, GroupOp::Update(update))
                    .await?
            }
            Op::Join(j) => {
                self.group_reply(&actor(&j.actor)?, &j.group, GroupOp::Join)
                    .await?
            }
            Op::Leave(l) => {
                self.group_reply(&actor(&l.actor)?, &l.group, GroupOp::Leave)
                    .await?
            }
            Op::History(h) => {
                let query = h
                    .query
                    .ok_or_else(|| Error::InvalidArgument("history without a query".into()))?;
                self.home_id("group", &query.group)?;
                let actor = actor(&h.actor)?;
                data_reply::Result::History(self.history(&actor, query).await?)
            }
        })
    }

    async fn group_reply(
        &self,
        actor: &Id,
        group: &str,
        op: GroupOp,
    ) -> Result<data_reply::Result, Error> {
        let group = self.home_id("group", group)?;
        Ok(data_reply::Result::Group(
            self.apply_group_op(actor, &group, op).await?,
        ))
    }

    /// Parses an id that must be homed in this region.
    fn home_id(&self, what: &str, id: &str) -> Result<Id, Error> {
        let id = Id::parse(what, id)?;
        if !self.is_local(&id) {
            return Err(Error::FailedPrecondition(format!(
                "{what} {id} is not homed in region {}",
                self.region
            )));
        }
        Ok(id)
    }

    /// Applies outbox items carried from another region (its roaming
    /// system proved the source), if the source may send every one of them.
    pub async fn handle_carry(&self, request: BusinessRequest) -> BusinessReply {
        let source = request.envelope.map(|e| e.source).unwrap_or_default();
        let checked = super::authority::check_items(&self.region, &source, &request.items)
            .and_then(|()| self.check_senders(&source, &request.items))
            .and_then(|()| check_order(request.order.as_ref()));
        let ordered = request.order.is_some();
        let received = match checked {
            Ok(()) => self.receive(source, request.items, request.order).await,
            Err(err) => {
                tracing::warn!(%source, %err, "carried items refused");
                Err(err)
            }
        };
        match received {
            Ok(Some(verdicts)) => BusinessReply {
                verdicts,
                ordered,
                ..Default::default()
            },
            Ok(None) => BusinessReply {
                out_of_order: true,
                ..Default::default()
            },
            Err(err) => BusinessReply {
                failure: Some(err.into()),
                ..Default::default()
            },
        }
    }

    /// Each submission's sender is the source's own user, or one whose
    /// home vouches that they were logged in at the source when they sent
    /// it (a sending time from more than 5 minutes ahead is refused).
    fn check_senders(&self, source: &str, items: &[Item]) -> Result<(), Error> {
        let now = self.clock.now_ms();
        for item in items {
            if let Some(item::Kind::Submission(s)) = &item.kind {
                if s.sent_at_ms > now + crate::trust::origin::MAX_SKEW_MS {
                    return Err(Error::InvalidArgument(format!(
                        "message {} was sent in the future",
                        s.message_id
                    )));
                }
                let sender = Id::parse("user", &s.sender)?;
                self.assertions.check(
                    &sender,
                    source,
                    s.sender_assertion.as_ref(),
                    s.sent_at_ms,
                )?;
            }
        }
        Ok(())
    }
}

/// A batch's place in its run counts up from 0.
fn check_order(order: Option<&CarryOrder>) -> Result<(), Error> {
    match order {
        Some(order) if order.batch < 0 => Err(Error::InvalidArgument(format!(
            "order.batch is {}; it counts up from 0",
            order.batch
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer_api::{Code, Envelope, Submission};
    use crate::service_center::business_center::with_group_joined_from_us;

    fn carried(n: u8, order: Option<CarryOrder>) -> BusinessRequest {
        let id = format!("0190b8a4-6d3e-7c2a-9f1b-{n:012x}");
        BusinessRequest {
            envelope: Some(Envelope {
                source: "us".into(),
                destination: "eu".into(),
                ..Default::default()
            }),
            items: vec![Item {
                kind: Some(item::Kind::Submission(Submission {
                    message_id: id,
                    group: "g@eu".into(),
                    sender: "bob@us".into(),
                    body: "hi".into(),
                    sent_at_ms: 1,
                    origin: "us".into(),
                    ..Default::default()
                })),
            }],
            order,
        }
    }

    /// The reply says whether the batch was applied in its run's turn: a
    /// sender keeps several batches in flight only on that word, which a
    /// destination from before runs never gives.
    #[tokio::test]
    async fn the_reply_says_a_batch_applied_in_its_turn_and_when_it_did_not() {
        let (_dir, center, _ann) = with_group_joined_from_us().await;
        let order = |batch| Some(CarryOrder { chain: 3, batch });

        let first = center.handle_carry(carried(1, order(0))).await;
        assert!(
            first.failure.is_none() && first.ordered && !first.out_of_order,
            "{first:?}"
        );
        assert_eq!(first.verdicts.len(), 1);
        let unordered = center.handle_carry(carried(2, None)).await;
        assert!(unordered.failure.is_none() && !unordered.ordered);
        assert_eq!(unordered.verdicts.len(), 1);
        let ahead = center.handle_carry(carried(3, order(2))).await;
        assert!(ahead.out_of_order && !ahead.ordered, "{ahead:?}");
        assert!(ahead.verdicts.is_empty(), "nothing applied");
        let negative = center.handle_carry(carried(4, order(-1))).await;
        assert_eq!(
            negative.failure.map(|f| f.code()),
            Some(Code::InvalidArgument)
        );
    }
}
