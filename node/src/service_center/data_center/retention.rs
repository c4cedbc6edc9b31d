//! Records the data center keeps only for a while, and the bounded deletes
//! that prune them. Expired sessions are deleted by
//! [`super::sessions::delete_expired`]; accepted sends here. What is kept and
//! for how long is in docs/ARCHITECTURE.md ("Retention").

use rusqlite::{Connection, params};

use crate::Error;

/// Deletes at most `limit` records of accepted sends made before
/// `cutoff_ms`, oldest first; how many it deleted. A retry of such a send
/// is a new message.
pub fn delete_accepted_before(
    conn: &Connection,
    cutoff_ms: i64,
    limit: usize,
) -> Result<usize, Error> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM accepted WHERE message_id IN
                 (SELECT message_id FROM accepted WHERE accepted_at_ms < ?1
                  ORDER BY accepted_at_ms LIMIT ?2)",
        )?
        .execute(params![cutoff_ms, limit as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::schema;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::migrate(&mut conn).unwrap();
        conn
    }

    fn accepted(conn: &Connection) -> Vec<String> {
        let mut statement = conn
            .prepare("SELECT message_id FROM accepted ORDER BY message_id")
            .unwrap();
        let rows = statement.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn only_records_before_the_cutoff_go_oldest_first_and_a_bounded_number() {
        let conn = db();
        for n in 0..10 {
            conn.execute(
                "INSERT INTO accepted (message_id, group_id, sender, idempotency_key, accepted_at_ms)
                 VALUES (?1, 'g@us', 'ann@eu', ?2, ?3)",
                params![format!("m{n}"), format!("k{n}"), 100 - 10 * n],
            )
            .unwrap();
        }
        // m9 is the oldest (accepted at 10), m0 the newest (at 100).
        assert_eq!(delete_accepted_before(&conn, 10, 100).unwrap(), 0);
        assert_eq!(delete_accepted_before(&conn, 30, 1).unwrap(), 1);
        assert!(
            !accepted(&conn).contains(&"m9".to_owned()),
            "the oldest first"
        );
        assert_eq!(delete_accepted_before(&conn, 30, 100).unwrap(), 1);
        assert_eq!(delete_accepted_before(&conn, 75, 2).unwrap(), 2);
        assert_eq!(delete_accepted_before(&conn, 75, 100).unwrap(), 3);
        assert_eq!(
            accepted(&conn),
            ["m0", "m1", "m2"],
            "records at or after the cutoff stay"
        );
    }

    #[test]
    fn the_prune_uses_the_time_index() {
        let conn = db();
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT message_id FROM accepted WHERE accepted_at_ms < 1
                 ORDER BY accepted_at_ms LIMIT 1",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("accepted_by_time"), "{plan}");
    }
}
