//! What the data center holds, counted for the metrics read at scrape time:
//! outbox depth per destination and the sessions in force.

use rusqlite::{Connection, params};

use crate::Error;

/// Items waiting in the outbox, per destination region.
pub fn outbox_depths(conn: &Connection) -> Result<Vec<(String, i64)>, Error> {
    let mut stmt =
        conn.prepare_cached("SELECT destination, count(*) FROM outbox GROUP BY destination")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Sessions that can still be used or refreshed at `now_ms`.
pub fn sessions_in_force(conn: &Connection, now_ms: i64) -> Result<i64, Error> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM sessions WHERE refresh_expires_at_ms > ?1")?
        .query_row(params![now_ms], |r| r.get(0))?)
}
