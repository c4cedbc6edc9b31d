//! The data center on PostgreSQL (15 or newer), for regions that run
//! several service-center replicas on one shared, replicated database
//! instead of one SQLite file on one volume.
//!
//! It runs on the synchronous `postgres` client, off the async threads
//! (docs/ARCHITECTURE.md §12). It holds the schema and its migrations
//! ([`migrations`]), the transaction the flows see ([`PgTx`]), the
//! connections ([`pool`]) and what the replicas hear of each other
//! ([`listen`]).

pub mod listen;
pub mod migrations;
pub mod pool;
pub mod tx;

pub use pool::{Connector, Pool, Settings};
pub use tx::PgTx;

/// The channel the replicas of a region NOTIFY and LISTEN on.
pub const CHANNEL: &str = "meridian_replicas";

use crate::Error;

/// Indexes of idempotency keys: a unique violation on one means another
/// replica accepted or sequenced the same key at the same moment.
const KEY_INDEXES: &[&str] = &["accepted_by_key", "sequenced_keys_pkey"];

/// SQLSTATE classes a retry can outlast: 08 connection exception, 53
/// insufficient resources, 57 operator intervention (shutdown, crash
/// recovery, start-up, cancelled statement).
const TRANSIENT_CLASSES: &[&str] = &["08", "53", "57"];

/// A PostgreSQL error as the data center reports it (§12, Errors). A lost
/// connection (any error the server did not answer with), a serialization
/// failure, a deadlock or a concurrent idempotency key is `Unavailable`,
/// which the outbox and the clients retry: trying again succeeds or finds
/// the winner's row; so is a server that is restarting, out of
/// connections or timed a statement out ([`TRANSIENT_CLASSES`]). Anything
/// else the server refused names its SQLSTATE and is `Internal`.
pub fn error(context: &str, err: postgres::Error) -> Error {
    use postgres::error::SqlState;
    let transient = |db: &postgres::error::DbError| {
        let code = db.code();
        let class = &code.code()[..2];
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || (*code == SqlState::UNIQUE_VIOLATION
                && db.constraint().is_some_and(|c| KEY_INDEXES.contains(&c)))
            // Connection exceptions, too many connections or out of memory
            // or disk, a server shutting down, crashed or still starting up
            // (57P01-57P03), a statement or lock timeout (57014, 55P03).
            || TRANSIENT_CLASSES.contains(&class)
            || *code == SqlState::LOCK_NOT_AVAILABLE
    };
    match err.as_db_error() {
        Some(db) if transient(db) => Error::Unavailable(format!(
            "data center: {context}: {} (SQLSTATE {}); try again",
            db.message(),
            db.code().code()
        )),
        Some(db) => Error::Internal(format!(
            "data center: {context}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => Error::Unavailable(format!("data center: {context}: {err}")),
    }
}
