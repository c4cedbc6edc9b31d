//! The other service-center replicas of this region, which share its data
//! center (PostgreSQL): what a replica tells them in the transaction that
//! commits the news, and what it does with what it hears
//! (docs/ARCHITECTURE.md §12, Replicas).
//!
//! - **Delivered**: messages committed for some users; a replica holding a
//!   session of one reads the message by seq and pushes it.
//! - **Waiting**: outbox items for a destination; the replica holding its
//!   lease carries them at once rather than at its next look.
//! - **Judged**: a home's verdict on a send; the replica whose `Send` call
//!   waits for it answers, and the sender's sessions hear it.
//! - **Revoked**: a session revoked or rotated; every replica drops it from
//!   its cache.
//!
//! A notice is one line of space-separated words, opened by the announcing
//! replica's id (so it ignores its own). Ids have no spaces; anything else
//! is hex. When the listener loses its connection, notices may be lost:
//! then every live subscription is cut (its client resumes from its
//! cursors) and the session cache is emptied.

use std::sync::Arc;

use prost::Message;

use super::data_center::Tx;
use super::data_center::tx::{MAX_NOTICE_BYTES, TokenHash};
use super::verdicts::Submitted;
use crate::Error;
use crate::proto::peer_api::Verdict as WireVerdict;

/// This replica, as the others know it: an id made at start (a v7 UUID:
/// its time and random bits tell replicas apart).
#[derive(Clone, Debug)]
pub struct Replica {
    id: Arc<str>,
    /// Whether others share the data center: alone, it announces nothing
    /// (and so never encodes a notice on the write path).
    shared: bool,
}

impl Default for Replica {
    fn default() -> Self {
        Self::new(true)
    }
}

/// What one replica tells the others.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Delivered {
        group: String,
        seq: u64,
        users: Vec<String>,
    },
    Waiting {
        destination: String,
    },
    Judged {
        submitted: Submitted,
        verdict: WireVerdict,
        /// No `Send` call at the announcing replica took the verdict.
        unclaimed: bool,
    },
    Revoked {
        access_hash: TokenHash,
    },
}

impl Replica {
    /// This replica; `shared` when other replicas use its data center.
    pub fn new(shared: bool) -> Self {
        Self {
            id: uuid::Uuid::now_v7().simple().to_string().into(),
            shared,
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Announces `notice` in `tx`, in as many lines as it takes.
    pub fn announce(&self, tx: &mut dyn Tx, notice: &Notice) -> Result<(), Error> {
        if !self.shared {
            return Ok(());
        }
        for line in encode(&self.id, notice) {
            tx.announce(&line)?;
        }
        Ok(())
    }

    /// The notice in `line`, unless this replica announced it (or it is
    /// not one: a newer replica's kind, which is ignored with a warning).
    pub fn hear(&self, line: &str) -> Option<Notice> {
        let (origin, rest) = line.split_once(' ')?;
        if origin == &*self.id {
            return None;
        }
        let notice = decode(rest);
        if notice.is_none() {
            tracing::warn!(notice = %line.chars().take(80).collect::<String>(), "a notice from another replica not understood");
        }
        notice
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn encode(origin: &str, notice: &Notice) -> Vec<String> {
    match notice {
        Notice::Delivered { group, seq, users } => {
            // Split the users over lines that each fit a notice.
            let head = format!("{origin} D {group} {seq}");
            let mut lines = Vec::new();
            let mut line = head.clone();
            for user in users {
                if line.len() + 1 + user.len() > MAX_NOTICE_BYTES && line.len() > head.len() {
                    lines.push(std::mem::replace(&mut line, head.clone()));
                }
                line.push(' ');
                line.push_str(user);
            }
            if line.len() > head.len() {
                lines.push(line);
            }
            lines
        }
        Notice::Waiting { destination } => vec![format!("{origin} W {destination}")],
        Notice::Judged {
            submitted,
            verdict,
            unclaimed,
        } => vec![format!(
            "{origin} J {} {} {} {} {}",
            u8::from(*unclaimed),
            submitted.sender,
            submitted.group,
            hex(submitted.idempotency_key.as_bytes()),
            hex(&verdict.encode_to_vec()),
        )],
        Notice::Revoked { access_hash } => vec![format!("{origin} R {}", hex(access_hash))],
    }
}

fn decode(text: &str) -> Option<Notice> {
    let mut words = text.split(' ');
    let notice = match words.next()? {
        "D" => Notice::Delivered {
            group: words.next()?.to_owned(),
            seq: words.next()?.parse().ok()?,
            users: words.map(str::to_owned).collect(),
        },
        "W" => Notice::Waiting {
            destination: words.next()?.to_owned(),
        },
        "J" => {
            let unclaimed = words.next()? == "1";
            let sender = words.next()?.to_owned();
            let group = words.next()?.to_owned();
            let idempotency_key = String::from_utf8(unhex(words.next()?)?).ok()?;
            let verdict = WireVerdict::decode(unhex(words.next()?)?.as_slice()).ok()?;
            Notice::Judged {
                submitted: Submitted {
                    message_id: verdict.message_id.clone(),
                    sender,
                    group,
                    idempotency_key,
                },
                verdict,
                unclaimed,
            }
        }
        "R" => Notice::Revoked {
            access_hash: unhex(words.next()?)?.try_into().ok()?,
        },
        _ => return None,
    };
    Some(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(notice: &Notice) -> Vec<Notice> {
        let (a, b) = (Replica::default(), Replica::default());
        encode(a.id(), notice)
            .iter()
            .map(|line| {
                assert!(line.len() <= MAX_NOTICE_BYTES, "{} bytes", line.len());
                assert_eq!(a.hear(line), None, "a replica ignores its own notices");
                b.hear(line).expect("another replica understands it")
            })
            .collect()
    }

    #[test]
    fn every_notice_reads_back_as_it_was_announced() {
        let verdict = crate::service_center::verdicts::Verdict::Sequenced {
            message_id: "m1".into(),
            seq: 7,
        }
        .to_wire("m1");
        for notice in [
            Notice::Waiting {
                destination: "us".into(),
            },
            Notice::Judged {
                submitted: Submitted {
                    message_id: "m1".into(),
                    sender: "ann@eu".into(),
                    group: "g@us".into(),
                    idempotency_key: "key with spaces ✓".into(),
                },
                verdict,
                unclaimed: true,
            },
            Notice::Revoked {
                access_hash: [7; 32],
            },
        ] {
            assert_eq!(round_trip(&notice), vec![notice]);
        }
    }

    #[test]
    fn a_delivery_to_many_users_is_split_over_notices_that_fit() {
        let users: Vec<String> = (0..2000).map(|i| format!("user-{i:05}@eu")).collect();
        let heard = round_trip(&Notice::Delivered {
            group: "g@eu".into(),
            seq: 42,
            users: users.clone(),
        });
        assert!(heard.len() > 1, "{} notices", heard.len());
        let mut all = Vec::new();
        for notice in heard {
            let Notice::Delivered { group, seq, users } = notice else {
                panic!("{notice:?}");
            };
            assert_eq!((group.as_str(), seq), ("g@eu", 42));
            all.extend(users);
        }
        assert_eq!(all, users);
    }

    #[test]
    fn what_is_not_a_notice_is_ignored() {
        let replica = Replica::default();
        for line in ["", "x", "x Q 1", "x D g@eu notanumber", "x R zz", "x J 1 a"] {
            assert_eq!(replica.hear(line), None, "{line:?}");
        }
    }
}
