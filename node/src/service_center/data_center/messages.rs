//! The message log: sequenced messages (of groups homed here, and the
//! communication records received for this region's users) and the sends
//! accepted from this region's clients.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Error;
use crate::proto::client_api::Delivery;

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

/// Messages of `group` after `after_seq`, in order, at most `limit`.
pub fn history(
    conn: &Connection,
    group: &str,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<Delivery>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, message_id, sender, body, sent_at_ms FROM messages
         WHERE group_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![group, after_seq, limit], |r| {
            Ok(Delivery {
                group: group.to_owned(),
                seq: r.get(0)?,
                message_id: r.get(1)?,
                sender: r.get(2)?,
                body: r.get(3)?,
                sent_at_ms: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
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
        let page = history(&conn, "g@eu", 1, 2).unwrap();
        assert_eq!(page.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(page[0], delivery(2));
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
}
