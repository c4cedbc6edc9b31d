//! Requests that arrived from other regions through the roaming system, for
//! records whose home is this region.

use super::BusinessCenter;
use super::groups::GroupOp;
use crate::Error;
use crate::ids::Id;
use crate::proto::peer_api::{
    BusinessReply, BusinessRequest, DataReply, DataRequest, data_reply, data_request,
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
                data_reply::Result::Verified(
                    self.verify_login(&id, &v.password, &v.attach_region)
                        .await?,
                )
            }
            Op::GetGroup(g) => self.group_reply(&g.actor, &g.group, GroupOp::Get).await?,
            Op::UpdateGroup(u) => {
                let update = u
                    .update
                    .ok_or_else(|| Error::InvalidArgument("update without a body".into()))?;
                let group = update.group.clone();
                self.group_reply(&u.actor, &group, GroupOp::Update(update))
                    .await?
            }
            Op::Join(j) => self.group_reply(&j.actor, &j.group, GroupOp::Join).await?,
            Op::Leave(l) => self.group_reply(&l.actor, &l.group, GroupOp::Leave).await?,
            Op::History(h) => {
                let query = h
                    .query
                    .ok_or_else(|| Error::InvalidArgument("history without a query".into()))?;
                self.home_id("group", &query.group)?;
                let actor = Id::parse("user", &h.actor)?;
                data_reply::Result::History(self.history(&actor, query).await?)
            }
        })
    }

    async fn group_reply(
        &self,
        actor: &str,
        group: &str,
        op: GroupOp,
    ) -> Result<data_reply::Result, Error> {
        let actor = Id::parse("user", actor)?;
        let group = self.home_id("group", group)?;
        Ok(data_reply::Result::Group(
            self.apply_group_op(&actor, &group, op).await?,
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
        let checked = super::authority::check_items(&self.region, &source, &request.items);
        let received = match checked {
            Ok(()) => self.receive(source, request.items).await,
            Err(err) => {
                tracing::warn!(%source, %err, "carried items refused");
                Err(err)
            }
        };
        match received {
            Ok(()) => BusinessReply { failure: None },
            Err(err) => BusinessReply {
                failure: Some(err.into()),
            },
        }
    }
}
