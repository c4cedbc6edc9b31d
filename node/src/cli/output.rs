//! What the CLI prints: a line for people, or one JSON object per line.

use serde_json::json;

use crate::proto::client_api::{
    Delivery, GroupInfo, LoginReply, Role, SendReply, SendVerdict, send_verdict,
};
use crate::proto::peer_api::LinkStatus;
use crate::roaming::links::LinkView;

pub struct Output {
    pub json: bool,
}

impl Output {
    fn print(&self, value: serde_json::Value, human: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }

    pub fn registered(&self, user: &str) {
        self.print(json!({"registered": user}), format!("registered {user}"));
    }

    pub fn session(&self, reply: &LoginReply) {
        self.print(
            json!({
                "user": reply.user, "region": reply.region, "session": reply.session,
                "expiresAtMs": reply.expires_at_ms, "refreshToken": reply.refresh_token,
                "refreshExpiresAtMs": reply.refresh_expires_at_ms,
            }),
            format!(
                "logged in as {} at region {}; session {}; refresh token {}",
                reply.user, reply.region, reply.session, reply.refresh_token
            ),
        );
    }

    pub fn logged_out(&self, revoked: bool) {
        let human = if revoked {
            "logged out"
        } else {
            "no such session here (expired, logged out, or issued by another region)"
        };
        self.print(json!({"revoked": revoked}), human.to_owned());
    }

    pub fn group_id(&self, id: &str) {
        self.print(json!({"group": id}), id.to_owned());
    }

    pub fn left(&self, id: &str) {
        self.print(json!({"left": id}), format!("left {id}"));
    }

    pub fn group(&self, info: &GroupInfo) {
        let settings = info.settings.unwrap_or_default();
        let members: Vec<serde_json::Value> = info
            .members
            .iter()
            .map(|m| json!({"user": m.user, "role": role_name(m.role)}))
            .collect();
        let mut value = json!({
            "group": info.id, "name": info.title, "announcement": info.announcement,
            "open": settings.open, "maxMembers": settings.max_members,
            "lastSeq": info.last_seq, "members": members,
        });
        if info.members_hidden {
            value["membersHidden"] = json!(true);
        }
        let member_list: Vec<String> = if info.members_hidden {
            vec!["(hidden: the group is closed and you are not a member)".to_owned()]
        } else {
            info.members
                .iter()
                .map(|m| format!("{} ({})", m.user, role_name(m.role)))
                .collect()
        };
        let human = format!(
            "group {}\nname: {}\nannouncement: {}\nopen: {}, max members: {}, last seq: {}\nmembers: {}",
            info.id,
            info.title,
            info.announcement,
            settings.open,
            settings.max_members,
            info.last_seq,
            member_list.join(", ")
        );
        self.print(value, human);
    }

    /// A send's id, then its seq, or `queued` when the group's home has not
    /// answered yet.
    pub fn sent(&self, reply: &SendReply) {
        let mut value = json!({
            "messageId": reply.message_id, "duplicate": reply.duplicate, "queued": reply.queued,
        });
        let human = if reply.queued {
            format!("{} queued", reply.message_id)
        } else {
            value["seq"] = json!(reply.seq);
            format!("{} seq {}", reply.message_id, reply.seq)
        };
        self.print(value, human);
    }

    /// The home's verdict on a queued send, as `listen` receives it.
    pub fn verdict(&self, v: &SendVerdict) {
        let (value, human) = match &v.outcome {
            Some(send_verdict::Outcome::Sequenced(s)) => (
                json!({"verdict": "sequenced", "group": v.group, "queuedId": v.queued_id,
                       "key": v.idempotency_key, "id": s.message_id, "seq": s.seq}),
                format!(
                    "{} #{} {}: your queued send {} is sequenced",
                    v.group, s.seq, s.message_id, v.queued_id
                ),
            ),
            Some(send_verdict::Outcome::Refused(r)) => {
                let code = tonic::Code::from_i32(r.code);
                (
                    json!({"verdict": "refused", "group": v.group, "queuedId": v.queued_id,
                           "key": v.idempotency_key, "code": format!("{code:?}"), "reason": r.message}),
                    format!(
                        "{}: your queued send {} was refused: {}",
                        v.group, v.queued_id, r.message
                    ),
                )
            }
            None => return,
        };
        self.print(value, human);
    }

    pub fn delivery(&self, d: &Delivery) {
        self.print(
            json!({"group": d.group, "seq": d.seq, "id": d.message_id, "sender": d.sender, "body": d.body, "sentAtMs": d.sent_at_ms}),
            format!("{} #{} {} {}: {}", d.group, d.seq, d.message_id, d.sender, d.body),
        );
    }
}

impl Output {
    pub fn link(&self, region: &str, link: &LinkStatus) {
        let rtt = link
            .rtt_millis
            .map(|r| format!("{r:.2} ms"))
            .unwrap_or_else(|| "-".into());
        let path = if link.path.is_empty() {
            "-".to_owned()
        } else {
            link.path.join("→")
        };
        // The design's words, as before the wire state became an enum.
        let state = LinkView::try_from(link.condition()).map_or("Unknown", LinkView::as_str);
        self.print(
            json!({
                "region": region, "peer": link.peer, "state": state, "path": link.path,
                "rttMillis": link.rtt_millis, "enabled": link.enabled, "cost": link.cost,
                "lastChangeMs": link.last_change_ms,
            }),
            format!(
                "{region} → {}: {} via {path}, rtt {rtt}{}",
                link.peer,
                state,
                if link.enabled { "" } else { " (link disabled)" }
            ),
        );
    }
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unspecified) {
        Role::Owner => "owner",
        Role::Admin => "admin",
        Role::Member => "member",
        Role::Unspecified => "unknown",
    }
}
