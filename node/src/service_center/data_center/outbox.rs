//! The durable outbox: cross-region work that stays until the destination
//! region acknowledges it. Items leave in the order they were written, per
//! destination.

use prost::Message;
use rusqlite::{Connection, params};

use crate::Error;
use crate::proto::peer_api::Item;

/// Writes an item for `destination`, with the `traceparent` of the span
/// that wrote it (empty when not traced), which its carry will follow.
pub fn enqueue(
    conn: &Connection,
    destination: &str,
    item: &Item,
    traceparent: &str,
    now_ms: i64,
) -> Result<(), Error> {
    let traceparent = (!traceparent.is_empty()).then_some(traceparent);
    conn.prepare_cached(
        "INSERT INTO outbox (destination, item, created_at_ms, traceparent)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        destination,
        item.encode_to_vec(),
        now_ms,
        traceparent
    ])?;
    Ok(())
}

/// An item waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub item: Item,
    /// Of the span that wrote it; empty when it was not traced.
    pub traceparent: String,
}

/// Up to `limit` items for `destination` with ids after `after_id`, oldest first.
pub fn pending(
    conn: &Connection,
    destination: &str,
    after_id: i64,
    limit: usize,
) -> Result<Vec<Pending>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, item, traceparent FROM outbox
         WHERE destination = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![destination, after_id, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, bytes, traceparent) = row?;
        items.push(Pending::decode(id, &bytes, traceparent)?);
    }
    Ok(items)
}

impl Pending {
    /// An item as stored; shared by both backends.
    pub fn decode(id: i64, bytes: &[u8], traceparent: Option<String>) -> Result<Self, Error> {
        let item = Item::decode(bytes)
            .map_err(|e| Error::Internal(format!("outbox item {id} is unreadable: {e}")))?;
        Ok(Pending {
            id,
            item,
            traceparent: traceparent.unwrap_or_default(),
        })
    }
}

/// Removes the items `ids` of `destination`, which it acknowledged.
pub fn clear(conn: &Connection, destination: &str, ids: &[i64]) -> Result<(), Error> {
    let mut delete =
        conn.prepare_cached("DELETE FROM outbox WHERE destination = ?1 AND id = ?2")?;
    for id in ids {
        delete.execute(params![destination, id])?;
    }
    Ok(())
}

/// Deletes at most `limit` of the items for `destination`, oldest first,
/// unsent: for a destination that left the mesh. How many it deleted.
pub fn discard(conn: &Connection, destination: &str, limit: usize) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM outbox WHERE id IN
                 (SELECT id FROM outbox WHERE destination = ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![destination, limit as i64])?)
}

/// Destinations with work waiting.
pub fn destinations(conn: &Connection) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare("SELECT DISTINCT destination FROM outbox")?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Items waiting, over all destinations.
pub fn depth(conn: &Connection) -> Result<u64, Error> {
    Ok(conn.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peer_api::{Submission, item::Kind};
    use crate::service_center::data_center::schema;

    fn item(n: u32) -> Item {
        Item {
            kind: Some(Kind::Submission(Submission {
                message_id: format!("m{n}"),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn items_leave_in_order_per_destination_and_only_when_cleared() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for n in 0..5 {
            enqueue(&conn, if n % 2 == 0 { "us" } else { "ap" }, &item(n), "", 1).unwrap();
        }
        let us = pending(&conn, "us", 0, 10).unwrap();
        assert_eq!(
            us.iter().map(|p| p.item.clone()).collect::<Vec<_>>(),
            vec![item(0), item(2), item(4)]
        );
        let after_first = pending(&conn, "us", us[0].id, 10).unwrap();
        assert_eq!(after_first.len(), 2);
        clear(&conn, "us", &[us[0].id, us[1].id]).unwrap();
        assert_eq!(pending(&conn, "us", 0, 10).unwrap().len(), 1);
        assert_eq!(depth(&conn).unwrap(), 3);
        let mut dests = destinations(&conn).unwrap();
        dests.sort();
        assert_eq!(dests, vec!["ap", "us"]);
    }

    #[test]
    fn discarding_takes_one_destinations_oldest_items_a_bounded_number() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        for n in 0..5 {
            enqueue(&conn, "gone", &item(n), "", 1).unwrap();
        }
        enqueue(&conn, "us", &item(9), "", 1).unwrap();
        assert_eq!(discard(&conn, "gone", 2).unwrap(), 2);
        let left: Vec<Item> = pending(&conn, "gone", 0, 10)
            .unwrap()
            .into_iter()
            .map(|p| p.item)
            .collect();
        assert_eq!(
            left,
            vec![item(2), item(3), item(4)],
            "the oldest went first"
        );
        assert_eq!(discard(&conn, "gone", 10).unwrap(), 3);
        assert_eq!(discard(&conn, "gone", 10).unwrap(), 0);
        assert_eq!(
            pending(&conn, "us", 0, 10).unwrap().len(),
            1,
            "other destinations stay"
        );
    }

    #[test]
    fn an_item_keeps_the_trace_that_wrote_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        enqueue(&conn, "us", &item(0), traced, 1).unwrap();
        enqueue(&conn, "us", &item(1), "", 1).unwrap();
        let traces: Vec<String> = pending(&conn, "us", 0, 10)
            .unwrap()
            .into_iter()
            .map(|p| p.traceparent)
            .collect();
        assert_eq!(traces, vec![traced.to_owned(), String::new()]);
    }
}
