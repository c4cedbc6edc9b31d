//! The data center on PostgreSQL (15 or newer), for regions that run
//! several service-center replicas on one shared, replicated database
//! instead of one SQLite file on one volume.
//!
//! It runs on the synchronous `postgres` client, off the async threads
//! (docs/ARCHITECTURE.md §12). So far this holds the schema and its
//! migrations ([`migrations`]); the backend's reads and writes come next.

pub mod migrations;

use crate::Error;

/// A PostgreSQL error as the data center reports it. An error the server
/// answered with (a constraint, a syntax error) names its SQLSTATE; any other
/// (the connection, I/O) is `Unavailable`, which callers retry. The backend
/// will also make serialization failures, deadlocks and concurrent keys
/// `Unavailable` (§12, Errors); migrations need only this.
pub fn error(context: &str, err: postgres::Error) -> Error {
    match err.as_db_error() {
        Some(db) => Error::Internal(format!(
            "data center: {context}: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        )),
        None => Error::Unavailable(format!("data center: {context}: {err}")),
    }
}
