//! Where each sending region's run of carried batches stands at this
//! destination (`Runs::take_batch`, SQLite's SQL): batches a sender has in
//! flight together apply in the order it sent them.

use rusqlite::{Connection, params};

use crate::Error;

/// Takes batch `batch` of run `chain` from `source`: the run's first
/// starts it over, and a later one is taken only right after the one
/// before it, or again after itself.
pub fn take_batch(conn: &Connection, source: &str, chain: i64, batch: i64) -> Result<bool, Error> {
    let taken = if batch == 0 {
        conn.prepare_cached(
            "INSERT INTO carried_runs (source, chain, batch) VALUES (?1, ?2, 0)
             ON CONFLICT (source) DO UPDATE SET chain = excluded.chain, batch = 0",
        )?
        .execute(params![source, chain])?
    } else {
        conn.prepare_cached(
            "UPDATE carried_runs SET batch = ?3
             WHERE source = ?1 AND chain = ?2 AND batch IN (?3 - 1, ?3)",
        )?
        .execute(params![source, chain, batch])?
    };
    Ok(taken == 1)
}
