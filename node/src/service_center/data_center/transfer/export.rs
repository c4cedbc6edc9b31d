//! Export: the SQLite data center of a stopped service center, read in one
//! transaction under the service center's own lock, written to a dump that
//! appears whole or not at all.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;

use super::rows::{
    Accepted, Assertion, Group, Hex, Member, Message, OutboxItem, Row, SequencedKey, Session, User,
};
use super::{
    Counts, DB_FILE, FORMAT, FORMAT_VERSION, Header, Lines, MAX_LINE_BYTES, Table, Trailer,
};
use crate::Error;
use crate::service_center::data_center::{lock, schema};

/// Writes everything the data center in `data_dir` holds to a new dump at
/// `out`, and returns the rows written per table. Fails at once, writing
/// nothing, while another process (a service center) holds the data
/// center. `out` is written as `out.tmp`, fsynced and renamed, so a crash
/// leaves no partial `out`; an existing `out` is replaced only if it is an
/// earlier dump (an export run again), never another file. Blocks.
pub fn export(data_dir: &Path, out: &Path) -> Result<Counts, Error> {
    let db = data_dir.join(DB_FILE);
    if !db.is_file() {
        return Err(Error::FailedPrecondition(format!(
            "no data center at {}: give the service center's data directory",
            db.display()
        )));
    }
    replaceable(out)?;
    let _lock = lock::try_acquire(&db)?;
    // Read-write, as the service center opens it: a WAL left by one that
    // crashed is recovered, not refused.
    let mut conn = Connection::open_with_flags(
        &db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let tx = conn.transaction()?;
    let version: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != schema::current_version() {
        return Err(Error::FailedPrecondition(format!(
            "{} has schema version {version}; this build exports version {}: run the \
             region's service center of this build once (it migrates the file), stop it, \
             and export again",
            db.display(),
            schema::current_version()
        )));
    }
    let tmp = tmp_path(out);
    let written = write(&tx, &tmp, version).and_then(|counts| {
        std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
        sync_parent(out)?;
        Ok(counts)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Refuses an existing `out` that is not a dump: a mistyped name (the
/// database itself, say) must not be overwritten.
fn replaceable(out: &Path) -> Result<(), Error> {
    let refused = || {
        Error::FailedPrecondition(format!(
            "{} exists and is not a data-center dump; an export replaces only an earlier \
             dump: remove it or name another file",
            out.display()
        ))
    };
    let file = match File::open(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(out, e)),
        Ok(file) => file,
    };
    let mut lines = Lines::new(BufReader::new(file), 4096);
    let Ok(Some((_, first))) = lines.next_line() else {
        return Err(refused());
    };
    let value: serde_json::Value = serde_json::from_str(first).map_err(|_| refused())?;
    match value["header"]["format"].as_str() {
        Some(FORMAT) => Ok(()),
        _ => Err(refused()),
    }
}

/// `out` with `.tmp` added.
fn tmp_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes the whole dump to `path` (0600) and fsyncs it.
fn write(tx: &Transaction<'_>, path: &Path, sqlite_schema_version: u32) -> Result<Counts, Error> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io(path, e))?;
    // 0600 also when an earlier, interrupted export left the file.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io(path, e))?;
    let mut out = Out {
        writer: BufWriter::new(file),
        path,
        counts: Counts::default(),
    };
    #[derive(Serialize)]
    struct HeaderLine<'a> {
        header: &'a Header,
    }
    out.line(&HeaderLine {
        header: &Header {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            sqlite_schema_version,
            exported_at_ms: crate::now_ms(),
        },
    })?;
    for table in Table::ALL {
        let (sql, map) = query(table);
        let mut stmt = tx.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            out.row(&map(row)?)?;
        }
    }
    let outbox_last_id: i64 = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    #[derive(Serialize)]
    struct TrailerLine {
        trailer: Trailer,
    }
    out.line(&TrailerLine {
        trailer: Trailer {
            rows: out.counts.to_map(),
            outbox_last_id,
        },
    })?;
    let file = out
        .writer
        .into_inner()
        .map_err(|e| io(path, e.into_error()))?;
    file.sync_all().map_err(|e| io(path, e))?;
    Ok(out.counts)
}

/// The dump being written.
struct Out<'a> {
    writer: BufWriter<File>,
    path: &'a Path,
    counts: Counts,
}

impl Out<'_> {
    fn row(&mut self, row: &Row) -> Result<(), Error> {
        self.line(row)?;
        self.counts.add(row.table());
        Ok(())
    }

    /// One line; never one that an import would refuse as too long.
    fn line(&mut self, value: &impl Serialize) -> Result<(), Error> {
        let mut line = serde_json::to_vec(value)
            .map_err(|e| Error::Internal(format!("encoding a dump line: {e}")))?;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::FailedPrecondition(format!(
                "line {} of the dump would hold {} bytes, more than the {MAX_LINE_BYTES} an \
                 import reads",
                self.counts.total() + 2,
                line.len()
            )));
        }
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| io(self.path, e))
    }
}

type Map = fn(&rusqlite::Row<'_>) -> rusqlite::Result<Row>;

/// How a table is read: every column, in its key's order.
fn query(table: Table) -> (&'static str, Map) {
    match table {
        Table::Users => (
            "SELECT id, password_hash, attached_region, created_at_ms FROM users ORDER BY id",
            |r| {
                Ok(Row::Users(User {
                    id: r.get(0)?,
                    password_hash: r.get(1)?,
                    attached_region: r.get(2)?,
                    created_at_ms: r.get(3)?,
                }))
            },
        ),
        Table::Sessions => (
            "SELECT id, access_hash, refresh_hash, user_id, expires_at_ms, refresh_expires_at_ms
             FROM sessions ORDER BY id",
            |r| {
                Ok(Row::Sessions(Session {
                    id: r.get(0)?,
                    access_hash: Hex(r.get(1)?),
                    refresh_hash: Hex(r.get(2)?),
                    user_id: r.get(3)?,
                    expires_at_ms: r.get(4)?,
                    refresh_expires_at_ms: r.get(5)?,
                }))
            },
        ),
        Table::Assertions => (
            "SELECT user_id, assertion, expires_at_ms FROM assertions ORDER BY user_id",
            |r| {
                Ok(Row::Assertions(Assertion {
                    user_id: r.get(0)?,
                    assertion: Hex(r.get(1)?),
                    expires_at_ms: r.get(2)?,
                }))
            },
        ),
        Table::Groups => (
            "SELECT id, title, announcement, open, max_members, last_seq, created_at_ms
             FROM groups ORDER BY id",
            |r| {
                Ok(Row::Groups(Group {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    announcement: r.get(2)?,
                    open: r.get(3)?,
                    max_members: r.get(4)?,
                    last_seq: r.get(5)?,
                    created_at_ms: r.get(6)?,
                }))
            },
        ),
        Table::Members => (
            "SELECT group_id, user_id, role FROM members ORDER BY group_id, user_id",
            |r| {
                Ok(Row::Members(Member {
                    group_id: r.get(0)?,
                    user_id: r.get(1)?,
                    role: r.get(2)?,
                }))
            },
        ),
        Table::Messages => (
            "SELECT group_id, seq, message_id, sender, body, sent_at_ms
             FROM messages ORDER BY group_id, seq",
            |r| {
                Ok(Row::Messages(Message {
                    group_id: r.get(0)?,
                    seq: r.get(1)?,
                    message_id: r.get(2)?,
                    sender: r.get(3)?,
                    body: r.get(4)?,
                    sent_at_ms: r.get(5)?,
                }))
            },
        ),
        Table::Accepted => (
            "SELECT message_id, group_id, sender, idempotency_key, accepted_at_ms, verdict
             FROM accepted ORDER BY message_id",
            |r| {
                Ok(Row::Accepted(Accepted {
                    message_id: r.get(0)?,
                    group_id: r.get(1)?,
                    sender: r.get(2)?,
                    idempotency_key: r.get(3)?,
                    accepted_at_ms: r.get(4)?,
                    verdict: r.get::<_, Option<Vec<u8>>>(5)?.map(Hex),
                }))
            },
        ),
        Table::SequencedKeys => (
            "SELECT group_id, sender, idempotency_key, message_id
             FROM sequenced_keys ORDER BY group_id, sender, idempotency_key",
            |r| {
                Ok(Row::SequencedKeys(SequencedKey {
                    group_id: r.get(0)?,
                    sender: r.get(1)?,
                    idempotency_key: r.get(2)?,
                    message_id: r.get(3)?,
                }))
            },
        ),
        Table::Outbox => (
            "SELECT id, destination, item, created_at_ms, traceparent FROM outbox ORDER BY id",
            |r| {
                Ok(Row::Outbox(OutboxItem {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    item: Hex(r.get(2)?),
                    created_at_ms: r.get(3)?,
                    traceparent: r.get(4)?,
                }))
            },
        ),
    }
}

/// Makes the rename of `path` durable: fsyncs the directory holding it.
fn sync_parent(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::FailedPrecondition(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::service_center::data_center::DataCenter;
    use crate::service_center::data_center::transfer::DumpReader;

    /// A data center in `dir` with one user, left closed.
    async fn populated(dir: &Path) {
        let dc = DataCenter::open(&dir.join(DB_FILE)).unwrap();
        dc.write(|tx| {
            tx.insert_user("ann@eu", "$argon2id$hash", 5)?;
            tx.create_group("team@eu", "Team", "", "ann@eu", 6)
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_dump_is_private_whole_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        populated(dir.path()).await;
        let out = dir.path().join("eu.dump");
        let counts = tokio::task::spawn_blocking({
            let (data, out) = (dir.path().to_path_buf(), out.clone());
            move || export(&data, &out)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(counts.get(Table::Users), 1);
        assert_eq!(counts.get(Table::Members), 1);
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!tmp_path(&out).exists());

        let mut dump = DumpReader::open(&out).unwrap();
        assert_eq!(
            dump.header().sqlite_schema_version,
            schema::current_version()
        );
        let mut rows = Vec::new();
        while let Some((_, row)) = dump.next_row().unwrap() {
            rows.push(row);
        }
        assert_eq!(dump.counts(), &counts);
        assert!(matches!(&rows[0], Row::Users(u) if u.password_hash == "$argon2id$hash"));
        assert!(matches!(&rows[1], Row::Groups(g) if g.id == "team@eu" && g.title == "Team"));

        // Run again, it replaces its dump; it never overwrites another file.
        assert_eq!(export(dir.path(), &out).unwrap(), counts);
        let db = dir.path().join(DB_FILE);
        let size = std::fs::metadata(&db).unwrap().len();
        let refused = export(dir.path(), &db).unwrap_err();
        assert!(
            matches!(&refused, Error::FailedPrecondition(m) if m.contains("is not a data-center dump")),
            "{refused:?}"
        );
        assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
        std::fs::write(&out, "").unwrap();
        assert!(
            export(dir.path(), &out).is_err(),
            "an empty file is no dump"
        );
    }

    #[tokio::test]
    async fn an_export_beside_a_running_data_center_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        populated(dir.path()).await;
        let running = DataCenter::open(&dir.path().join(DB_FILE)).unwrap();
        let out = dir.path().join("eu.dump");
        let refused = export(dir.path(), &out).unwrap_err();
        assert!(
            matches!(&refused, Error::FailedPrecondition(m) if m.contains("is in use")),
            "{refused:?}"
        );
        assert!(!out.exists() && !tmp_path(&out).exists());
        drop(running);
    }

    #[test]
    fn an_export_of_a_directory_without_a_data_center_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let refused = export(dir.path(), &dir.path().join("x.dump")).unwrap_err();
        assert!(
            matches!(&refused, Error::FailedPrecondition(m) if m.starts_with("no data center at")),
            "{refused:?}"
        );
        assert!(!dir.path().join(DB_FILE).exists(), "nothing was created");
    }
}
