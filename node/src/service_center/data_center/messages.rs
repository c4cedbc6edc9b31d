//! The message log: sequenced messages (of groups homed here, and the
//! communication records received for this region's users) and the sends
//! accepted from this region's clients.

use rusqlite::{Connection, OptionalExtension, params};

use prost::Message;

use crate::Error;
use crate::proto::client_api::Delivery;
use crate::proto::peer_api::Verdict;

/// A send this region accepted earlier with the same idempotency key.
pub fn accepted_by_key(
    conn: &Connection,
    sender: &str,
    group: &str,
    key: &str,
) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT message_id FROM accepted WHERE sender = ?1 AND group_id = ?2 AND idempotency_key = ?3",
        )?
        .query_row([sender, group, key], |r| r.get(0))
        .optional()?)
}

pub fn insert_accepted(
    conn: &Connection,
    message_id: &str,
    group: &str,
    sender: &str,
    key: Option<&str>,
    now_ms: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO accepted (message_id, group_id, sender, idempotency_key, accepted_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![message_id, group, sender, key, now_ms])?;
    Ok(())
}

/// The verdict of a group's home recorded on a send accepted here, if it
/// has answered.
pub fn verdict_of(conn: &Connection, message_id: &str) -> Result<Option<Verdict>, Error> {
    let blob: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT verdict FROM accepted WHERE message_id = ?1")?
        .query_row([message_id], |r| r.get(0))
        .optional()?;
    blob.flatten()
        .map(|bytes| decode_verdict(message_id, &bytes))
        .transpose()
}

/// A verdict as stored; shared by both backends.
pub fn decode_verdict(message_id: &str, bytes: &[u8]) -> Result<Verdict, Error> {
    Verdict::decode(bytes).map_err(|e| {
        Error::Internal(format!(
            "the verdict on message {message_id} is unreadable: {e}"
        ))
    })
}

/// Records the home's verdict on a send accepted here (its `message_id`).
/// The latest one stands: a submission the outbox resent is judged again,
/// and once sequenced it stays sequenced.
pub fn record_verdict(conn: &Connection, verdict: &Verdict) -> Result<(), Error> {
    conn.prepare_cached("UPDATE accepted SET verdict = ?2 WHERE message_id = ?1")?
        .execute(params![verdict.message_id, verdict.encode_to_vec()])?;
    Ok(())
}

/// The message a sender's key was sequenced as, at the group's home.
pub fn sequenced_by_key(
    conn: &Connection,
    group: &str,
    sender: &str,
    key: &str,
) -> Result<Option<String>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT message_id FROM sequenced_keys WHERE group_id = ?1 AND sender = ?2 AND idempotency_key = ?3",
        )?
        .query_row([group, sender, key], |r| r.get(0))
        .optional()?)
}

pub fn insert_sequenced_key(
    conn: &Connection,
    group: &str,
    sender: &str,
    key: &str,
    message_id: &str,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO sequenced_keys (group_id, sender, idempotency_key, message_id) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![group, sender, key, message_id])?;
    Ok(())
}

/// The sequence number a message was given, if this region has it.
pub fn seq_of(conn: &Connection, message_id: &str) -> Result<Option<u64>, Error> {
    Ok(conn
        .prepare_cached("SELECT seq FROM messages WHERE message_id = ?1")?
        .query_row([message_id], |r| r.get(0))
        .optional()?)
}

/// Stores a sequenced message; `false` when it was already stored.
pub fn insert(conn: &Connection, message: &Delivery) -> Result<bool, Error> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO messages (group_id, seq, message_id, sender, body, sent_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            message.group,
            message.seq,
            message.message_id,
            message.sender,
            message.body,
            message.sent_at_ms
        ])?;
    Ok(inserted == 1)
}

/// One page of a group's messages, in `seq` order.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub messages: Vec<Delivery>,
    /// Messages follow the page's last one: ask again after its `seq`.
    pub more: bool,
}

/// Messages of `group` after `after_seq`, in order: at most `limit` of
/// them, and at most `max_bytes` of them encoded, except that the first one
/// is taken whatever its size, so that paging always makes progress.
/// Rows are read one at a time, so a page past the budget is never held.
pub fn page(
    conn: &Connection,
    group: &str,
    after_seq: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<Page, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, message_id, sender, body, sent_at_ms FROM messages
         WHERE group_id = ?1 AND seq > ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![group, after_seq])?;
    let mut page = Page::default();
    let mut bytes = 0;
    while let Some(r) = rows.next()? {
        if page.is_full(limit) {
            break;
        }
        let delivery = Delivery {
            group: group.to_owned(),
            seq: r.get(0)?,
            message_id: r.get(1)?,
            sender: r.get(2)?,
            body: r.get(3)?,
            sent_at_ms: r.get(4)?,
        };
        if !page.add(delivery, &mut bytes, max_bytes) {
            break;
        }
    }
    Ok(page)
}

impl Page {
    /// Whether the page holds `limit` messages; then more follow the one
    /// just read. Both backends fill a page with this and [`Page::add`].
    pub fn is_full(&mut self, limit: u32) -> bool {
        let full = self.messages.len() >= limit as usize;
        self.more |= full;
        full
    }

    /// Adds `delivery` if it fits in `max_bytes` (counted in `bytes`), or
    /// is the first; `false`, with `more` set, when it does not fit.
    pub fn add(&mut self, delivery: Delivery, bytes: &mut usize, max_bytes: usize) -> bool {
        let size = encoded_in_list(&delivery);
        if !self.messages.is_empty() && *bytes + size > max_bytes {
            self.more = true;
            return false;
        }
        *bytes += size;
        self.messages.push(delivery);
        true
    }
}

/// The bytes `message` takes as an element of a repeated field: its tag,
/// its length and itself.
fn encoded_in_list(message: &Delivery) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::schema;

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            group: "g@eu".into(),
            seq,
            message_id: format!("m{seq}"),
            sender: "ann@eu".into(),
            body: format!("hello {seq}"),
            sent_at_ms: 5,
        }
    }

    fn seqs(messages: &[Delivery]) -> Vec<u64> {
        messages.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn records_are_stored_once_and_paged_by_seq() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for seq in [3, 1, 2, 4] {
            assert!(insert(&conn, &delivery(seq)).unwrap());
        }
        assert!(
            !insert(&conn, &delivery(2)).unwrap(),
            "a redelivery is ignored"
        );
        let first = page(&conn, "g@eu", 1, 2, usize::MAX).unwrap();
        assert_eq!(seqs(&first.messages), vec![2, 3]);
        assert!(first.more, "seq 4 follows");
        assert_eq!(first.messages[0], delivery(2));
        let last = page(&conn, "g@eu", 3, 2, usize::MAX).unwrap();
        assert_eq!((seqs(&last.messages), last.more), (vec![4], false));
        assert_eq!(seq_of(&conn, "m4").unwrap(), Some(4));
    }

    #[test]
    fn idempotency_keys_find_the_first_message() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        insert_accepted(&conn, "m1", "g@us", "ann@eu", Some("k"), 1).unwrap();
        insert_accepted(&conn, "m2", "g@us", "ann@eu", None, 1).unwrap();
        insert_accepted(&conn, "m3", "g@us", "ann@eu", None, 1).unwrap();
        assert_eq!(
            accepted_by_key(&conn, "ann@eu", "g@us", "k")
                .unwrap()
                .as_deref(),
            Some("m1")
        );
        assert!(insert_accepted(&conn, "m4", "g@us", "ann@eu", Some("k"), 1).is_err());
        insert_sequenced_key(&conn, "g@us", "ann@eu", "k", "m1").unwrap();
        assert_eq!(
            sequenced_by_key(&conn, "g@us", "ann@eu", "k")
                .unwrap()
                .as_deref(),
            Some("m1")
        );
    }

    #[test]
    fn a_homes_verdict_is_kept_on_the_accepted_send_and_the_latest_stands() {
        use crate::proto::client_api::Sequenced;
        use crate::proto::peer_api::{Failure, verdict::Outcome};

        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        insert_accepted(&conn, "m1", "g@us", "ann@eu", Some("k"), 1).unwrap();
        assert_eq!(verdict_of(&conn, "m1").unwrap(), None, "not answered yet");
        assert_eq!(verdict_of(&conn, "nope").unwrap(), None);
        let refused = Verdict {
            message_id: "m1".into(),
            outcome: Some(Outcome::Refused(Failure {
                code: 3,
                message: "ann@eu is not a member of group g@us".into(),
            })),
        };
        record_verdict(&conn, &refused).unwrap();
        assert_eq!(verdict_of(&conn, "m1").unwrap(), Some(refused));
        // Resent after ann joined: sequenced, for good.
        let sequenced = Verdict {
            message_id: "m1".into(),
            outcome: Some(Outcome::Sequenced(Sequenced {
                message_id: "m0".into(),
                seq: 9,
            })),
        };
        record_verdict(&conn, &sequenced).unwrap();
        assert_eq!(verdict_of(&conn, "m1").unwrap(), Some(sequenced));
    }

    /// 64 KiB bodies: a page stops at the byte budget, before the count,
    /// and pages cover every message once, in order.
    #[test]
    fn pages_stop_at_the_byte_budget_and_always_make_progress() {
        use crate::limits::{HISTORY_PAGE_BYTES, MAX_BODY_BYTES, MAX_CLIENT_MESSAGE_BYTES};
        use crate::proto::client_api::HistoryReply;

        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for seq in 1..=120 {
            let mut big = delivery(seq);
            big.body = "x".repeat(MAX_BODY_BYTES);
            insert(&conn, &big).unwrap();
        }
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let next = page(&conn, "g@eu", after, 1_000, HISTORY_PAGE_BYTES).unwrap();
            let reply = HistoryReply {
                messages: next.messages,
                more: next.more,
            };
            assert!(reply.encoded_len() <= HISTORY_PAGE_BYTES + 16);
            assert!(reply.encoded_len() < MAX_CLIENT_MESSAGE_BYTES);
            if reply.more {
                // Full: one more message would have passed the budget.
                assert!(reply.encoded_len() + MAX_BODY_BYTES > HISTORY_PAGE_BYTES);
            }
            seen.extend(seqs(&reply.messages));
            match reply.messages.last() {
                Some(last) if reply.more => after = last.seq,
                _ => break,
            }
        }
        assert_eq!(seen, (1..=120).collect::<Vec<_>>());

        // A budget smaller than one message still gives one message a page.
        let tiny = page(&conn, "g@eu", 7, 1_000, 1).unwrap();
        assert_eq!((seqs(&tiny.messages), tiny.more), (vec![8], true));
        // Past the last message: an empty page with nothing more.
        let none = page(&conn, "g@eu", 120, 1_000, 1).unwrap();
        assert_eq!(none, Page::default());
    }
}
