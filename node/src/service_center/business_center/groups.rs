//! Query and store group data. Always applied at the group's home; a request
//! for a group homed elsewhere is forwarded there and the answer returns
//! along the same path.

use super::{BusinessCenter, check_len, unexpected};
use crate::Error;
use crate::ids::{Id, is_name};
use crate::limits::{MAX_ANNOUNCEMENT_BYTES, MAX_GROUP_MEMBERS, MAX_TITLE_BYTES};
use crate::proto::client_api::{CreateGroupRequest, GroupInfo, Role, UpdateGroupRequest};
use crate::proto::peer_api::{GetGroup, Join, Leave, UpdateGroup, data_reply, data_request};
use crate::service_center::data_center::tx::group_not_found;

/// What a group request asks of the home.
pub(super) enum GroupOp {
    Get,
    Update(UpdateGroupRequest),
    Join,
    Leave,
}

impl BusinessCenter {
    /// Creates a group homed in this region, owned by `actor`.
    pub async fn create_group(
        &self,
        actor: &Id,
        request: CreateGroupRequest,
    ) -> Result<GroupInfo, Error> {
        if !is_name(&request.name) {
            return Err(Error::InvalidArgument(format!(
                "group name {:?} must be lowercase letters, digits, '.', '_' or '-', at most 64",
                request.name
            )));
        }
        let id = Id::new("group", &request.name, &self.region)?;
        let title = if request.title.is_empty() {
            request.name.clone()
        } else {
            request.title
        };
        check_len("title", &title, MAX_TITLE_BYTES)?;
        check_len(
            "announcement",
            &request.announcement,
            MAX_ANNOUNCEMENT_BYTES,
        )?;
        let (group, owner, now) = (id.to_string(), actor.to_string(), crate::now_ms());
        let info = self
            .dc
            .write(move |tx| {
                tx.create_group(&group, &title, &request.announcement, &owner, now)?;
                tx.group_info(&group)
            })
            .await?;
        tracing::info!(group = %id, owner = %actor, "group created");
        Ok(info)
    }

    pub async fn get_group(&self, actor: &Id, group: &str) -> Result<GroupInfo, Error> {
        self.group_op(actor, group, GroupOp::Get).await
    }

    pub async fn update_group(
        &self,
        actor: &Id,
        request: UpdateGroupRequest,
    ) -> Result<GroupInfo, Error> {
        let group = request.group.clone();
        self.group_op(actor, &group, GroupOp::Update(request)).await
    }

    pub async fn join_group(&self, actor: &Id, group: &str) -> Result<GroupInfo, Error> {
        self.group_op(actor, group, GroupOp::Join).await
    }

    pub async fn leave_group(&self, actor: &Id, group: &str) -> Result<GroupInfo, Error> {
        self.group_op(actor, group, GroupOp::Leave).await
    }

    /// Runs `op` at the group's home: here, or through the roaming system.
    async fn group_op(&self, actor: &Id, group: &str, op: GroupOp) -> Result<GroupInfo, Error> {
        let id = Id::parse("group", group)?;
        if let GroupOp::Update(update) = &op {
            validate_update(update)?;
        }
        if self.is_local(&id) {
            return self.apply_group_op(actor, &id, op).await;
        }
        let actor_id = actor;
        let (actor, group) = (actor.to_string(), group.to_owned());
        let request = match op {
            GroupOp::Get => data_request::Op::GetGroup(GetGroup { actor, group }),
            GroupOp::Update(update) => data_request::Op::UpdateGroup(UpdateGroup {
                actor,
                update: Some(update),
            }),
            GroupOp::Join => data_request::Op::Join(Join { actor, group }),
            GroupOp::Leave => data_request::Op::Leave(Leave { actor, group }),
        };
        match self.ask_home_as(id.home(), actor_id, request).await? {
            data_reply::Result::Group(info) => Ok(info),
            _ => Err(unexpected(id.home())),
        }
    }

    /// At the home: applies a group request.
    pub(super) async fn apply_group_op(
        &self,
        actor: &Id,
        group: &Id,
        op: GroupOp,
    ) -> Result<GroupInfo, Error> {
        let (actor_id, group_id) = (actor.to_string(), group.to_string());
        match op {
            GroupOp::Get => {
                self.dc
                    .read(move |tx| {
                        let mut info = tx.group_info(&group_id)?;
                        // A closed group's members are for its members only.
                        let open = info.settings.is_some_and(|s| s.open);
                        if !open && tx.role(&group_id, &actor_id)?.is_none() {
                            info.members.clear();
                            info.members_hidden = true;
                        }
                        Ok(info)
                    })
                    .await
            }
            GroupOp::Update(update) => {
                validate_update(&update)?;
                self.dc
                    .write(move |tx| {
                        let role = tx.role(&group_id, &actor_id)?;
                        if !tx.group_exists(&group_id)? {
                            return Err(group_not_found(&group_id));
                        }
                        if !matches!(role, Some(Role::Owner | Role::Admin)) {
                            return Err(Error::PermissionDenied(format!(
                                "only the owner and admins of group {group_id} may change it"
                            )));
                        }
                        tx.update_group(
                            &group_id,
                            update.title.as_deref(),
                            update.announcement.as_deref(),
                            update.settings.as_ref(),
                        )?;
                        tx.group_info(&group_id)
                    })
                    .await
            }
            GroupOp::Join => {
                self.dc
                    .write(move |tx| {
                        tx.join(&group_id, &actor_id)?;
                        tx.group_info(&group_id)
                    })
                    .await
            }
            GroupOp::Leave => {
                self.dc
                    .write(move |tx| {
                        tx.leave(&group_id, &actor_id)?;
                        tx.group_info(&group_id)
                    })
                    .await
            }
        }
    }
}

pub(super) fn validate_update(update: &UpdateGroupRequest) -> Result<(), Error> {
    if let Some(title) = &update.title {
        if title.is_empty() {
            return Err(Error::InvalidArgument("title must not be empty".into()));
        }
        check_len("title", title, MAX_TITLE_BYTES)?;
    }
    if let Some(announcement) = &update.announcement {
        check_len("announcement", announcement, MAX_ANNOUNCEMENT_BYTES)?;
    }
    if let Some(settings) = &update.settings
        && (settings.max_members == 0 || settings.max_members > MAX_GROUP_MEMBERS)
    {
        return Err(Error::InvalidArgument(format!(
            "settings.max_members must be between 1 and {MAX_GROUP_MEMBERS}"
        )));
    }
    Ok(())
}
