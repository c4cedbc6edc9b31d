//! Who may say what to this region (docs/ARCHITECTURE.md §8): checks
//! on every item another region's outbox carries here, before any of it is
//! applied. The source region is proven by mutual TLS or its origin
//! signature; these rules bound what even a proven region may ask.
//!
//! - Only a group's home sequences it: a submission must be for a group
//!   homed here and come from the region that accepted it.
//! - A sequenced distribution is never taken for a group homed here, and one
//!   for another region's group only from that home; a roaming forward only
//!   from the home of every recipient it names. (A roaming forward may reach
//!   the group's home, where the recipient is attached; there it is only
//!   delivered, and only when it is the message the home sequenced.)
//! - Every field has the limits client input has.

use super::check_len;
use crate::Error;
use crate::ids::Id;
use crate::limits::{
    MAX_BATCH_ITEMS, MAX_BODY_BYTES, MAX_GROUP_MEMBERS, MAX_IDEMPOTENCY_KEY_BYTES,
};
use crate::proto::peer_api::{Distribution, Item, Submission, item};

fn denied(source: &str, what: String) -> Error {
    Error::PermissionDenied(format!("region {source} may not {what}"))
}

/// Checks a batch that `source` carried to `region`; nothing of a batch
/// that fails is applied.
pub fn check_items(region: &str, source: &str, items: &[Item]) -> Result<(), Error> {
    if items.len() > MAX_BATCH_ITEMS {
        return Err(Error::InvalidArgument(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} items"
        )));
    }
    for item in items {
        match &item.kind {
            Some(item::Kind::Submission(s)) => check_submission(region, source, s)?,
            Some(item::Kind::Distribution(d)) => check_distribution(region, source, d)?,
            None => return Err(Error::InvalidArgument("an empty item".into())),
        }
    }
    Ok(())
}

fn check_submission(region: &str, source: &str, s: &Submission) -> Result<(), Error> {
    let group = Id::parse("group", &s.group)?;
    Id::parse("user", &s.sender)?;
    check_len("message body", &s.body, MAX_BODY_BYTES)?;
    check_len(
        "idempotency key",
        &s.idempotency_key,
        MAX_IDEMPOTENCY_KEY_BYTES,
    )?;
    uuid::Uuid::parse_str(&s.message_id).map_err(|_| {
        Error::InvalidArgument(format!("message id {:?} is not a UUID", s.message_id))
    })?;
    if group.home() != region {
        return Err(denied(
            source,
            format!("submit to group {group} here: its home is {}", group.home()),
        ));
    }
    if s.origin != source {
        return Err(denied(
            source,
            format!("carry a message accepted by region {:?}", s.origin),
        ));
    }
    Ok(())
}

fn check_distribution(region: &str, source: &str, d: &Distribution) -> Result<(), Error> {
    let message = d
        .message
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("distribution without a message".into()))?;
    let group = Id::parse("group", &message.group)?;
    Id::parse("user", &message.sender)?;
    check_len("message body", &message.body, MAX_BODY_BYTES)?;
    if message.seq == 0 {
        return Err(Error::InvalidArgument(
            "a distribution without a seq".into(),
        ));
    }
    if d.recipients.len() > MAX_GROUP_MEMBERS as usize {
        return Err(Error::InvalidArgument(format!(
            "a distribution names at most {MAX_GROUP_MEMBERS} recipients"
        )));
    }
    if group.home() == region && !d.roaming {
        return Err(denied(
            source,
            format!("distribute messages of group {group}: this region is its home"),
        ));
    }
    for recipient in &d.recipients {
        let recipient = Id::parse("user", recipient)?;
        if d.roaming && recipient.home() != source {
            return Err(denied(
                source,
                format!("forward messages to {recipient}, whose home is another region"),
            ));
        }
        if !d.roaming && recipient.home() != region {
            return Err(denied(
                source,
                format!("deliver to {recipient} here: its home is another region"),
            ));
        }
    }
    if !d.roaming && group.home() != source {
        return Err(denied(
            source,
            format!("distribute messages of group {group}: only its home may"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::client_api::Delivery;

    fn submission(group: &str, origin: &str) -> Item {
        Item {
            kind: Some(item::Kind::Submission(Submission {
                message_id: uuid::Uuid::now_v7().to_string(),
                group: group.into(),
                sender: "ann@eu".into(),
                body: "hi".into(),
                idempotency_key: String::new(),
                sent_at_ms: 1,
                origin: origin.into(),
                sender_assertion: None,
            })),
        }
    }

    fn distribution(group: &str, recipients: &[&str], roaming: bool) -> Item {
        Item {
            kind: Some(item::Kind::Distribution(Distribution {
                message: Some(Delivery {
                    group: group.into(),
                    seq: 1,
                    message_id: uuid::Uuid::now_v7().to_string(),
                    sender: "ann@eu".into(),
                    body: "hi".into(),
                    sent_at_ms: 1,
                }),
                recipients: recipients.iter().map(|r| r.to_string()).collect(),
                roaming,
            })),
        }
    }

    fn code(result: Result<(), Error>) -> &'static str {
        match result {
            Ok(()) => "ok",
            Err(Error::PermissionDenied(_)) => "denied",
            Err(Error::InvalidArgument(_)) => "invalid",
            Err(_) => "other",
        }
    }

    #[test]
    fn only_the_home_sequences_and_only_from_the_accepting_region() {
        assert_eq!(
            code(check_items("us", "eu", &[submission("g@us", "eu")])),
            "ok"
        );
        assert_eq!(
            code(check_items("us", "eu", &[submission("g@ap", "eu")])),
            "denied",
            "a submission for another region's group"
        );
        assert_eq!(
            code(check_items("us", "eu", &[submission("g@us", "ap")])),
            "denied",
            "a submission claiming another accepting region"
        );
    }

    #[test]
    fn distributions_come_only_from_the_groups_home() {
        let to_ap = |group, source, recipients: &[&str], roaming| {
            code(check_items(
                "ap",
                source,
                &[distribution(group, recipients, roaming)],
            ))
        };
        assert_eq!(to_ap("g@us", "us", &["cat@ap"], false), "ok");
        assert_eq!(
            to_ap("g@us", "eu", &["cat@ap"], false),
            "denied",
            "a third region"
        );
        assert_eq!(
            to_ap("g@ap", "us", &["cat@ap"], false),
            "denied",
            "for ap's own group"
        );
        assert_eq!(
            to_ap("g@us", "us", &["bob@us"], false),
            "denied",
            "another home's user"
        );
        assert_eq!(
            to_ap("g@us", "eu", &["ann@eu"], true),
            "ok",
            "a roaming forward"
        );
        assert_eq!(to_ap("g@us", "eu", &["bob@us"], true), "denied");
        assert_eq!(
            to_ap("g@ap", "eu", &["ann@eu"], true),
            "ok",
            "to the group's home"
        );
    }

    #[test]
    fn peer_input_has_the_client_limits() {
        let mut big = submission("g@us", "eu");
        if let Some(item::Kind::Submission(s)) = &mut big.kind {
            s.body = "x".repeat(MAX_BODY_BYTES + 1);
        }
        assert_eq!(code(check_items("us", "eu", &[big])), "invalid");
        let many = vec![submission("g@us", "eu"); MAX_BATCH_ITEMS + 1];
        assert_eq!(code(check_items("us", "eu", &many)), "invalid");
        assert_eq!(
            code(check_items("us", "eu", &[submission("G@us", "eu")])),
            "invalid"
        );
        assert_eq!(
            code(check_items("us", "eu", &[Item { kind: None }])),
            "invalid"
        );
    }
}
