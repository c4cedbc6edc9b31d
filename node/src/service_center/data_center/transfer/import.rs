//! Import: a dump loaded into an empty PostgreSQL data center in one
//! transaction, so that a database holds all of a region or none of it.

use std::io::BufRead;
use std::path::Path;

use postgres::{Client, Statement, Transaction};

use super::rows::Row;
use super::{Counts, DumpReader, Table};
use crate::Error;
use crate::service_center::data_center::postgres::{Connector, Settings, error, migrations};

/// Loads the dump at `dump` into the PostgreSQL data center `settings`
/// names: brings its schema up to date, refuses it unless it is empty, and
/// inserts every row in one transaction, which commits only once the whole
/// dump has been read and its trailer's counts match. Returns the rows
/// loaded per table. Blocks; call it outside any async runtime (or on a
/// blocking thread).
pub fn import(dump: &Path, settings: &Settings) -> Result<Counts, Error> {
    // A file that is no dump is refused before the database is touched.
    let mut reader = DumpReader::open(dump)?;
    let mut client = Connector::new(settings)?.connect()?;
    migrations::migrate(&mut client)?;
    load(&mut client, &mut reader)
}

/// Loads `dump` (its header already read) into the migrated, empty data
/// center on `client`, all or nothing.
fn load<R: BufRead>(client: &mut Client, dump: &mut DumpReader<R>) -> Result<Counts, Error> {
    let mut tx = client
        .transaction()
        .map_err(|e| error("starting the import", e))?;
    // No one writes beside the import (a service center started too soon
    // waits, or fails after its lock timeout), and the emptiness checked
    // next holds until the commit.
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .map_err(|e| error("locking the tables (is a service center using them?)", e))?;
    refuse_unless_empty(&mut tx)?;
    let statements = Table::ALL
        .iter()
        .map(|&t| tx.prepare(insert_sql(t)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("preparing the inserts", e))?;
    while let Some((line, row)) = dump.next_row()? {
        insert(&mut tx, &statements[row.table() as usize], &row)
            .map_err(|e| error(&format!("dump line {line} ({})", row.table().name()), e))?;
    }
    let outbox_last_id = dump
        .trailer()
        .map(|t| t.outbox_last_id)
        .ok_or_else(|| Error::Internal("the dump ended without its trailer".into()))?;
    // Rows carried their ids; new rows must be given ids after them (and
    // outbox ids after every one the file ever gave), as SQLite would.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('sessions', 'id'), coalesce(max(id), 0) + 1, false)
         FROM sessions",
        &[],
    )
    .map_err(|e| error("moving the sessions' ids on", e))?;
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('outbox', 'id'),
                       greatest(coalesce(max(id), 0), $1) + 1, false)
         FROM outbox",
        &[&outbox_last_id],
    )
    .map_err(|e| error("moving the outbox's ids on", e))?;
    tx.commit().map_err(|e| error("committing the import", e))?;
    Ok(dump.counts().clone())
}

/// Refuses a database that holds any row of the data center: an import
/// adds a whole region, it never merges into one.
fn refuse_unless_empty(tx: &mut Transaction<'_>) -> Result<(), Error> {
    let mut held = Vec::new();
    for table in Table::ALL {
        let any: bool = tx
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", table.name()),
                &[],
            )
            .map_err(|e| error("checking that the database is empty", e))?
            .get(0);
        if any {
            held.push(table.name());
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "the database already holds a data center (rows in {}); import only into an empty \
         database",
        held.join(", ")
    )))
}

fn insert_sql(table: Table) -> &'static str {
    match table {
        Table::Users => {
            "INSERT INTO users (id, password_hash, attached_region, created_at_ms)
             VALUES ($1, $2, $3, $4)"
        }
        Table::Sessions => {
            "INSERT INTO sessions
                 (id, access_hash, refresh_hash, user_id, expires_at_ms, refresh_expires_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)"
        }
        Table::Assertions => {
            "INSERT INTO assertions (user_id, assertion, expires_at_ms) VALUES ($1, $2, $3)"
        }
        Table::Groups => {
            "INSERT INTO groups
                 (id, title, announcement, open, max_members, last_seq, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        }
        Table::Members => "INSERT INTO members (group_id, user_id, role) VALUES ($1, $2, $3)",
        Table::Messages => {
            "INSERT INTO messages (group_id, seq, message_id, sender, body, sent_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)"
        }
        Table::Accepted => {
            "INSERT INTO accepted
                 (message_id, group_id, sender, idempotency_key, accepted_at_ms, verdict)
             VALUES ($1, $2, $3, $4, $5, $6)"
        }
        Table::SequencedKeys => {
            "INSERT INTO sequenced_keys (group_id, sender, idempotency_key, message_id)
             VALUES ($1, $2, $3, $4)"
        }
        Table::Outbox => {
            "INSERT INTO outbox (id, destination, item, created_at_ms, traceparent)
             VALUES ($1, $2, $3, $4, $5)"
        }
    }
}

fn insert(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    row: &Row,
) -> Result<u64, postgres::Error> {
    match row {
        Row::Users(r) => tx.execute(
            statement,
            &[
                &r.id,
                &r.password_hash,
                &r.attached_region,
                &r.created_at_ms,
            ],
        ),
        Row::Sessions(r) => tx.execute(
            statement,
            &[
                &r.id,
                &r.access_hash.0,
                &r.refresh_hash.0,
                &r.user_id,
                &r.expires_at_ms,
                &r.refresh_expires_at_ms,
            ],
        ),
        Row::Assertions(r) => {
            tx.execute(statement, &[&r.user_id, &r.assertion.0, &r.expires_at_ms])
        }
        Row::Groups(r) => tx.execute(
            statement,
            &[
                &r.id,
                &r.title,
                &r.announcement,
                &r.open,
                &r.max_members,
                &r.last_seq,
                &r.created_at_ms,
            ],
        ),
        Row::Members(r) => tx.execute(statement, &[&r.group_id, &r.user_id, &r.role]),
        Row::Messages(r) => tx.execute(
            statement,
            &[
                &r.group_id,
                &r.seq,
                &r.message_id,
                &r.sender,
                &r.body,
                &r.sent_at_ms,
            ],
        ),
        Row::Accepted(r) => tx.execute(
            statement,
            &[
                &r.message_id,
                &r.group_id,
                &r.sender,
                &r.idempotency_key,
                &r.accepted_at_ms,
                &r.verdict.as_ref().map(|v| v.0.as_slice()),
            ],
        ),
        Row::SequencedKeys(r) => tx.execute(
            statement,
            &[&r.group_id, &r.sender, &r.idempotency_key, &r.message_id],
        ),
        Row::Outbox(r) => tx.execute(
            statement,
            &[
                &r.id,
                &r.destination,
                &r.item.0,
                &r.created_at_ms,
                &r.traceparent,
            ],
        ),
    }
}
