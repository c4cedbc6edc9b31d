//! Moving a region's data center from its SQLite file to PostgreSQL
//! (docs/ARCHITECTURE.md §12, "Moving a region to PostgreSQL"; the README
//! has the steps): [`export`] writes everything the file holds to a dump,
//! [`import`] loads a dump into an empty PostgreSQL database in one
//! transaction. The binary `meridian-data-center` runs them.
//!
//! The dump is text, one JSON object a line, so that an operator can read
//! it and a reader never holds more than a line:
//! - line 1, the header: `{"header":{"format":..,"version":..,"sqlite_schema_version":..,..}}`;
//! - one line per row, tagged by its table: `{"table":"users","id":..,..}`,
//!   bytes in lowercase hex, tables in [`Table::ALL`]'s order;
//! - the last line, the trailer: `{"trailer":{"rows":{"users":3,..},"outbox_last_id":..}}`.
//!
//! The trailer's counts let an import tell a whole dump from a cut one.
//! The dump holds password hashes and token hashes, so it is written 0600.

mod dump;
mod export;
mod import;
mod lines;
mod rows;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use dump::DumpReader;
pub use export::export;
pub use import::import;
pub use lines::Lines;
pub use rows::{
    Accepted, Assertion, Group, Hex, Member, Message, OutboxItem, Row, SequencedKey, Session, User,
};

use crate::Error;

/// What the header's `format` says: this is a data-center dump.
pub const FORMAT: &str = "meridian-data-center-dump";
/// The layout of the dump this build writes and reads. A change to the
/// lines' shapes bumps it; an import refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The longest line a dump may hold, so that a corrupt file cannot make
/// the reader hold unbounded memory. Far above any row the node writes
/// (a message body is bounded by `limits`).
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// The SQLite file in a service center's data directory.
pub const DB_FILE: &str = "data-center.sqlite";

/// The dump's first line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The SQLite schema (`PRAGMA user_version`) the rows were read from:
    /// the rows have its columns.
    pub sqlite_schema_version: u32,
    pub exported_at_ms: i64,
}

/// The dump's last line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Rows written, per table.
    pub rows: BTreeMap<String, u64>,
    /// The highest outbox id the file ever gave (SQLite's AUTOINCREMENT
    /// counter), which may be above every id left in it: the importer
    /// continues the ids after it.
    pub outbox_last_id: i64,
}

/// The tables a dump carries, in the order it carries them (a group before
/// its members).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Users,
    Sessions,
    Assertions,
    Groups,
    Members,
    Messages,
    Accepted,
    SequencedKeys,
    Outbox,
}

impl Table {
    pub const ALL: [Table; 9] = [
        Table::Users,
        Table::Sessions,
        Table::Assertions,
        Table::Groups,
        Table::Members,
        Table::Messages,
        Table::Accepted,
        Table::SequencedKeys,
        Table::Outbox,
    ];

    /// The table's name, in both schemas and in the dump's tags.
    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Sessions => "sessions",
            Table::Assertions => "assertions",
            Table::Groups => "groups",
            Table::Members => "members",
            Table::Messages => "messages",
            Table::Accepted => "accepted",
            Table::SequencedKeys => "sequenced_keys",
            Table::Outbox => "outbox",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Rows per table: what an export wrote or an import loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts([u64; Table::ALL.len()]);

impl Counts {
    pub fn get(&self, table: Table) -> u64 {
        self.0[table as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn add(&mut self, table: Table) {
        self.0[table as usize] += 1;
    }

    fn to_map(&self) -> BTreeMap<String, u64> {
        Table::ALL
            .into_iter()
            .map(|t| (t.name().to_string(), self.get(t)))
            .collect()
    }

    /// The trailer's counts, which must name every table and no other.
    fn from_map(map: &BTreeMap<String, u64>) -> Result<Counts, String> {
        let mut counts = Counts::default();
        for (name, &rows) in map {
            let table = Table::from_name(name).ok_or_else(|| format!("unknown table {name:?}"))?;
            counts.0[table as usize] = rows;
        }
        match Table::ALL.into_iter().find(|t| !map.contains_key(t.name())) {
            Some(missing) => Err(format!("no count for table {}", missing.name())),
            None => Ok(counts),
        }
    }
}

/// One table a line: `users 3`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for table in Table::ALL {
            writeln!(f, "{:<15} {}", table.name(), self.get(table))?;
        }
        Ok(())
    }
}

/// A problem with the dump's content at `line`, for a person to fix.
fn bad_line(line: usize, what: impl fmt::Display) -> Error {
    Error::InvalidArgument(format!("dump line {line}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_through_the_trailer_and_name_what_is_wrong() {
        let mut counts = Counts::default();
        counts.add(Table::Users);
        counts.add(Table::Outbox);
        counts.add(Table::Outbox);
        assert_eq!(Counts::from_map(&counts.to_map()).unwrap(), counts);
        assert_eq!(counts.total(), 3);

        let mut map = counts.to_map();
        map.remove("members");
        assert_eq!(
            Counts::from_map(&map).unwrap_err(),
            "no count for table members"
        );
        map.insert("members".into(), 0);
        map.insert("leases".into(), 1);
        assert_eq!(
            Counts::from_map(&map).unwrap_err(),
            "unknown table \"leases\""
        );
    }

    #[test]
    fn every_table_has_its_own_name() {
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
            assert_eq!(Table::ALL[table as usize], table);
        }
    }
}
