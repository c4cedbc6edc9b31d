//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.
//! A migration runs in one transaction with its version bump, so a crash
//! during a migration leaves the previous version intact.

use rusqlite::Connection;

use crate::Error;

/// Each entry moves the schema one version up.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, groups, the message log and the outbox.
    "
    -- Users whose home is this region. `attached_region` is the home-location
    -- register: where the user last logged in, so deliveries follow them.
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        attached_region TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Sessions issued by this region (to local and roaming users).
    CREATE TABLE sessions (
        token TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Groups whose home is this region; `last_seq` is the group's order.
    CREATE TABLE groups (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        announcement TEXT NOT NULL,
        open INTEGER NOT NULL,
        max_members INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE members (
        group_id TEXT NOT NULL REFERENCES groups(id),
        user_id TEXT NOT NULL,
        role INTEGER NOT NULL,
        PRIMARY KEY (group_id, user_id)
    ) WITHOUT ROWID;

    -- Sequenced messages: the log of groups homed here, and the
    -- communication records received for this region's users.
    CREATE TABLE messages (
        group_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        message_id TEXT NOT NULL UNIQUE,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        PRIMARY KEY (group_id, seq)
    ) WITHOUT ROWID;

    -- Sends accepted from this region's clients, for idempotent retries.
    CREATE TABLE accepted (
        message_id TEXT PRIMARY KEY,
        group_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        idempotency_key TEXT,
        accepted_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX accepted_by_key ON accepted (sender, group_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;

    -- Submissions sequenced here, by the key their sender gave, so a retry
    -- through another region is not sequenced twice.
    CREATE TABLE sequenced_keys (
        group_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        message_id TEXT NOT NULL,
        PRIMARY KEY (group_id, sender, idempotency_key)
    ) WITHOUT ROWID;

    -- Cross-region work, cleared only when the destination acknowledges.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination TEXT NOT NULL,
        item BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX outbox_by_destination ON outbox (destination, id);
    ",
    // 2: sessions keep only the SHA-256 of their tokens, and gain a refresh
    // token. Sessions of version 1 held plaintext tokens: they are dropped
    // (their users log in again), and scrubbed (see `migrate`).
    "
    DROP TABLE sessions;

    -- Sessions issued by this region (to local and roaming users), by the
    -- hashes of their tokens. A session can be used until `expires_at_ms`
    -- and refreshed until `refresh_expires_at_ms`.
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        access_hash BLOB NOT NULL UNIQUE,
        refresh_hash BLOB NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        refresh_expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions (refresh_expires_at_ms);
    ",
    // 3: the assertions of their homes that roaming users logged in here,
    // shown with what this region does for them at other homes.
    "
    CREATE TABLE assertions (
        user_id TEXT PRIMARY KEY,
        assertion BLOB NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX assertions_by_expiry ON assertions (expires_at_ms);
    ",
    // 4: accepted sends are kept for a retention period (see
    // `service_center::retention`), pruned oldest first.
    "
    CREATE INDEX accepted_by_time ON accepted (accepted_at_ms);
    ",
    // 5: the home's verdict on a send accepted here for a group homed
    // elsewhere (a `meridian.peer.v1.Verdict`), so that a retry with the
    // same key answers with it. NULL until the home has answered, and for
    // sends to groups homed here (their seq is in `messages`).
    "
    ALTER TABLE accepted ADD COLUMN verdict BLOB;
    ",
    // 6: the W3C `traceparent` of the span that wrote an outbox item, so
    // that its carry, even after a restart, joins the trace of the send
    // (docs/ARCHITECTURE.md §9, Traces). NULL when it was not traced.
    "
    ALTER TABLE outbox ADD COLUMN traceparent TEXT;
    ",
    // 7: where each sending region's run of carried batches stands here
    // (`Runs::take_batch`), so that batches in flight together apply in
    // the order they were sent.
    "
    CREATE TABLE carried_runs (
        source TEXT PRIMARY KEY,
        chain INTEGER NOT NULL,
        batch INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the database up to the current version.
pub fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > current_version() {
        return Err(Error::FailedPrecondition(format!(
            "the data center has schema version {version}, newer than this build's {}",
            current_version()
        )));
    }
    if version == current_version() {
        return Ok(());
    }
    // What a migration drops (such as version 1's plaintext session tokens)
    // is overwritten with zeros, not left in free pages.
    conn.pragma_update(None, "secure_delete", true)?;
    let migrated = apply(conn, version);
    conn.pragma_update(None, "secure_delete", false)?;
    migrated
}

fn apply(conn: &mut Connection, from: u32) -> Result<(), Error> {
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)?;
        tx.commit()?;
        tracing::info!(version = index + 1, "data center migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, current_version());
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn version_1_plaintext_sessions_are_dropped_and_scrubbed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO sessions (token, user_id, expires_at_ms) VALUES (?1, 'ann@eu', 1)",
                [token],
            )
            .unwrap();
        }
        let on_disk = || String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(
            on_disk().contains(token),
            "the test wrote a plaintext token"
        );

        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, current_version());
        let sessions: i64 = conn
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sessions, 0);
        drop(conn);
        assert!(
            !on_disk().contains(token),
            "the plaintext token is gone from the file"
        );
    }
}
