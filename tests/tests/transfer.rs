//! Moving a region from SQLite to PostgreSQL (issue 11): a data center
//! written through its own API on a real SQLite file, exported, imported
//! into a real PostgreSQL server (`meridian_tests::postgres`), and read back
//! through the same `Tx` operations, which must answer exactly as before.
//! Also the refusals: a database that holds a region, a cut dump (all or
//! nothing), and an export beside a running service center.
//!
//! Like tests/postgres.rs, the tests that need PostgreSQL are skipped
//! loudly where it is not installed and cannot be.

use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_node::Error;
use meridian_node::proto::client_api::{Delivery, GroupInfo, GroupSettings, Role, Sequenced};
use meridian_node::proto::peer_api::{
    Distribution, Failure, Item, Submission, Verdict, item, verdict,
};
use meridian_node::service_center::data_center::postgres::Settings;
use meridian_node::service_center::data_center::transfer::{self, DB_FILE, Table};
use meridian_node::service_center::data_center::tx::{Pending, TokenHash, Tokens, Tx};
use meridian_node::service_center::data_center::{DataCenter, postgres::migrations};
use meridian_tests::local_mode::binary;
use meridian_tests::postgres::Postgres;

fn available() -> bool {
    meridian_tests::postgres::available("TRANSFER TEST")
}

const NOW: i64 = 1_700_000_000_000;
const USERS: [&str; 3] = ["ann@eu", "bob@eu", "cat@eu"];
const GROUPS: [&str; 3] = ["team@eu", "ops@eu", "news@eu"];
/// A group homed elsewhere, whose messages this region keeps for its users.
const REMOTE: &str = "world@us";
const DESTINATIONS: [&str; 2] = ["us", "ap"];
/// Messages sequenced per home group: enough for several pages.
const MESSAGES: [u64; 3] = [23, 7, 0];

fn hash(seed: u8, kind: u8) -> TokenHash {
    let mut hash = [seed; 32];
    hash[0] = kind;
    hash
}

fn tokens(seed: u8) -> Tokens {
    Tokens {
        access_hash: hash(seed, 0xa),
        refresh_hash: hash(seed, 0xf),
        expires_at_ms: NOW + 60_000 * seed as i64,
        refresh_expires_at_ms: NOW + 3_600_000,
    }
}

fn submission(n: u32) -> Item {
    Item {
        kind: Some(item::Kind::Submission(Submission {
            message_id: format!("sub-{n}"),
            group: REMOTE.into(),
            sender: "ann@eu".into(),
            body: format!("submitted {n}"),
            idempotency_key: format!("key-{n}"),
            sent_at_ms: NOW + n as i64,
            origin: "eu".into(),
            ..Default::default()
        })),
    }
}

fn distribution(n: u32) -> Item {
    Item {
        kind: Some(item::Kind::Distribution(Distribution {
            message: Some(Delivery {
                group: "team@eu".into(),
                seq: n as u64,
                message_id: format!("team@eu-{n}"),
                sender: "bob@eu".into(),
                body: "x".into(),
                sent_at_ms: NOW,
            }),
            recipients: vec!["dan@us".into()],
            roaming: n.is_multiple_of(2),
        })),
    }
}

/// Sequences `body` in a group homed here, as the home does.
fn sequence(tx: &mut dyn Tx, group: &str, sender: &str, body: &str) -> Result<u64, Error> {
    assert!(tx.lock_group(group)?);
    let seq = tx.next_seq(group)?;
    tx.insert_message(&Delivery {
        group: group.into(),
        seq,
        message_id: format!("{group}-{seq}"),
        sender: sender.into(),
        body: body.into(),
        sent_at_ms: NOW + seq as i64,
    })?;
    Ok(seq)
}

/// Writes a region's worth of everything through the data center's API.
async fn populate(dc: &DataCenter) {
    dc.write(|tx| {
        for (i, user) in USERS.iter().enumerate() {
            tx.insert_user(
                user,
                &format!("$argon2id$v=19$m=19456,t=2,p=1$salt{i}$hash{i}"),
                NOW,
            )?;
            tx.insert_session(user, &tokens(i as u8 + 1))?;
        }
        tx.attach("bob@eu", "us")?;
        // A roaming user's home vouched for them here.
        tx.put_assertion("dan@us", &[0, 1, 2, 0xfe, 0xff], NOW + 90_000, NOW)?;
        tx.insert_session("dan@us", &tokens(9))?;

        tx.create_group("team@eu", "Team", "be kind", "ann@eu", NOW)?;
        tx.join("team@eu", "bob@eu")?;
        tx.join("team@eu", "cat@eu")?;
        tx.join("team@eu", "dan@us")?;
        tx.create_group("ops@eu", "Ops", "", "bob@eu", NOW + 1)?;
        tx.join("ops@eu", "ann@eu")?;
        tx.update_group(
            "ops@eu",
            Some("Ops (closed)"),
            Some("pager duty"),
            Some(&GroupSettings {
                open: false,
                max_members: 5,
            }),
        )?;
        tx.create_group("news@eu", "News", "", "cat@eu", NOW + 2)?;
        Ok(())
    })
    .await
    .unwrap();
    // Messages in several groups, interleaved, each in its own transaction
    // as the home sequences them.
    for n in 0..MESSAGES[0] {
        for (group, count) in GROUPS.into_iter().zip(MESSAGES) {
            if n < count {
                let body = format!("{group} message {n} ünïcode \"quoted\"\n");
                dc.write(move |tx| sequence(tx, group, "ann@eu", &body))
                    .await
                    .unwrap();
            }
        }
    }
    dc.write(|tx| {
        // The communication records of a group homed elsewhere.
        for seq in [4, 5, 9] {
            tx.insert_message(&Delivery {
                group: REMOTE.into(),
                seq,
                message_id: format!("{REMOTE}-{seq}"),
                sender: "dan@us".into(),
                body: format!("from afar {seq}"),
                sent_at_ms: NOW - 1000,
            })?;
        }
        // Sends accepted here for that group: answered, refused, waiting.
        tx.insert_accepted("sub-1", REMOTE, "ann@eu", Some("key-1"), NOW)?;
        tx.record_verdict(&Verdict {
            message_id: "sub-1".into(),
            outcome: Some(verdict::Outcome::Sequenced(Sequenced {
                message_id: "sub-1".into(),
                seq: 10,
            })),
        })?;
        tx.insert_accepted("sub-2", REMOTE, "bob@eu", Some("key-2"), NOW + 1)?;
        tx.record_verdict(&Verdict {
            message_id: "sub-2".into(),
            outcome: Some(verdict::Outcome::Refused(Failure {
                code: 3,
                message: "bob@eu is not a member of group world@us".into(),
            })),
        })?;
        tx.insert_accepted("sub-3", REMOTE, "ann@eu", None, NOW + 2)?;
        tx.insert_accepted("team@eu-1", "team@eu", "ann@eu", Some("local-1"), NOW)?;
        // Keys sequenced here for senders elsewhere.
        tx.insert_sequenced_key("team@eu", "dan@us", "far-1", "team@eu-2")?;
        tx.insert_sequenced_key("ops@eu", "dan@us", "far-1", "ops@eu-1")?;

        // The outbox, interleaved over two destinations; a third one's
        // item, the last written, is acknowledged and cleared, so the
        // highest id ever given is above every id left.
        tx.enqueue(
            "us",
            &submission(1),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            NOW,
        )?;
        tx.enqueue("ap", &distribution(1), "", NOW)?;
        tx.enqueue("us", &submission(2), "", NOW + 1)?;
        tx.enqueue(
            "ap",
            &distribution(2),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            NOW + 1,
        )?;
        tx.enqueue("us", &submission(3), "", NOW + 2)?;
        tx.enqueue("sa", &distribution(3), "", NOW + 3)?;
        let sent = tx.pending("sa", 0, 10)?;
        tx.clear("sa", &[sent[0].id])?;
        Ok(())
    })
    .await
    .unwrap();
}

/// Everything a flow can read back, through the `Tx` operations.
#[derive(Debug, PartialEq)]
struct Snapshot {
    users: Vec<(String, Option<String>, Option<String>)>,
    assertion: Option<Vec<u8>>,
    sessions: Vec<Option<(String, i64)>>,
    refreshable: Vec<Option<String>>,
    in_force: i64,
    groups: Vec<GroupInfo>,
    roles: Vec<Option<Role>>,
    /// Each group's history, page by page (5 at a time).
    history: Vec<Vec<Vec<Delivery>>>,
    seqs: Vec<Option<u64>>,
    verdicts: Vec<Option<Verdict>>,
    accepted_keys: Vec<Option<String>>,
    sequenced_keys: Vec<Option<String>>,
    destinations: Vec<String>,
    depths: Vec<(String, i64)>,
    pending: Vec<Vec<Pending>>,
}

fn snapshot(tx: &mut dyn Tx) -> Result<Snapshot, Error> {
    let mut s = Snapshot {
        users: Vec::new(),
        assertion: tx.assertion("dan@us")?,
        sessions: Vec::new(),
        refreshable: Vec::new(),
        in_force: tx.sessions_in_force(NOW)?,
        groups: Vec::new(),
        roles: Vec::new(),
        history: Vec::new(),
        seqs: Vec::new(),
        verdicts: Vec::new(),
        accepted_keys: Vec::new(),
        sequenced_keys: Vec::new(),
        destinations: tx.destinations()?,
        depths: tx.depths()?,
        pending: Vec::new(),
    };
    for user in USERS.iter().chain(&["dan@us"]) {
        s.users.push((
            user.to_string(),
            tx.password_hash(user)?,
            tx.attached_region(user)?,
        ));
    }
    for seed in [1, 2, 3, 9, 7] {
        s.sessions
            .push(tx.session_by_access(&tokens(seed).access_hash)?);
        s.refreshable
            .push(tx.refreshable(&tokens(seed).refresh_hash, NOW)?);
    }
    for group in GROUPS {
        s.groups.push(tx.group_info(group)?);
        for user in USERS.iter().chain(&["dan@us"]) {
            s.roles.push(tx.role(group, user)?);
        }
    }
    s.destinations.sort();
    s.depths.sort();
    for group in GROUPS.iter().chain(&[REMOTE]) {
        let mut pages = Vec::new();
        let mut after = 0;
        loop {
            let page = tx.page(group, after, 5, 1 << 20)?;
            if let Some(last) = page.messages.last() {
                after = last.seq;
            }
            let more = page.more;
            pages.push(page.messages);
            if !more {
                break;
            }
        }
        s.history.push(pages);
    }
    for id in ["team@eu-1", "team@eu-23", "ops@eu-7", "world@us-9", "nope"] {
        s.seqs.push(tx.seq_of(id)?);
    }
    for id in ["sub-1", "sub-2", "sub-3", "team@eu-1"] {
        s.verdicts.push(tx.verdict_of(id)?);
    }
    for (sender, key) in [
        ("ann@eu", "key-1"),
        ("bob@eu", "key-2"),
        ("ann@eu", "key-3"),
    ] {
        s.accepted_keys
            .push(tx.accepted_by_key(sender, REMOTE, key)?);
    }
    s.accepted_keys
        .push(tx.accepted_by_key("ann@eu", "team@eu", "local-1")?);
    for group in ["team@eu", "ops@eu", "news@eu"] {
        s.sequenced_keys
            .push(tx.sequenced_by_key(group, "dan@us", "far-1")?);
    }
    for destination in DESTINATIONS.iter().chain(&["sa"]) {
        s.pending.push(tx.pending(destination, 0, 100)?);
    }
    Ok(s)
}

/// What [`populate`] wrote, checked on its own so that two empty or wrong
/// snapshots cannot pass by being equal.
fn assert_populated(s: &Snapshot) {
    assert_eq!(
        s.users[0].1.as_deref(),
        Some("$argon2id$v=19$m=19456,t=2,p=1$salt0$hash0")
    );
    assert_eq!(s.users[1].2.as_deref(), Some("us"), "bob is attached at us");
    assert_eq!(s.users[3], ("dan@us".into(), None, None));
    assert_eq!(s.assertion.as_deref(), Some(&[0, 1, 2, 0xfe, 0xff][..]));
    assert_eq!(
        s.sessions,
        [
            Some(("ann@eu".into(), NOW + 60_000)),
            Some(("bob@eu".into(), NOW + 120_000)),
            Some(("cat@eu".into(), NOW + 180_000)),
            Some(("dan@us".into(), NOW + 540_000)),
            None
        ]
    );
    assert_eq!(s.refreshable[3].as_deref(), Some("dan@us"));
    assert_eq!(s.in_force, 4);
    let team = &s.groups[0];
    assert_eq!(
        (team.title.as_str(), team.announcement.as_str()),
        ("Team", "be kind")
    );
    assert_eq!(team.last_seq, 23);
    assert_eq!(team.members.len(), 4);
    let ops = &s.groups[1];
    assert_eq!(ops.title, "Ops (closed)");
    assert_eq!(
        ops.settings,
        Some(GroupSettings {
            open: false,
            max_members: 5
        })
    );
    assert_eq!(
        &s.roles[..4],
        [
            Some(Role::Owner),
            Some(Role::Member),
            Some(Role::Member),
            Some(Role::Member)
        ]
    );
    assert_eq!(&s.roles[4..6], [Some(Role::Member), Some(Role::Owner)]);
    // Histories in order: 23 messages over 5 pages, 7 over 2, none, and
    // the remote group's records with their gaps.
    let seqs = |pages: &Vec<Vec<Delivery>>| -> Vec<u64> {
        pages.iter().flatten().map(|m| m.seq).collect()
    };
    assert_eq!(s.history[0].len(), 5);
    assert_eq!(seqs(&s.history[0]), (1..=23).collect::<Vec<_>>());
    assert_eq!(seqs(&s.history[1]), (1..=7).collect::<Vec<_>>());
    assert_eq!(seqs(&s.history[2]), Vec::<u64>::new());
    assert_eq!(seqs(&s.history[3]), [4, 5, 9]);
    assert_eq!(
        s.history[0][0][0].body,
        "team@eu message 0 ünïcode \"quoted\"\n"
    );
    assert_eq!(s.seqs, [Some(1), Some(23), Some(7), Some(9), None]);
    assert!(matches!(
        &s.verdicts[..],
        [
            Some(Verdict {
                outcome: Some(verdict::Outcome::Sequenced(_)),
                ..
            }),
            Some(Verdict {
                outcome: Some(verdict::Outcome::Refused(_)),
                ..
            }),
            None,
            None
        ]
    ));
    assert_eq!(
        s.accepted_keys,
        [
            Some("sub-1".into()),
            Some("sub-2".into()),
            None,
            Some("team@eu-1".into())
        ]
    );
    assert_eq!(
        s.sequenced_keys,
        [Some("team@eu-2".into()), Some("ops@eu-1".into()), None]
    );
    assert_eq!(s.destinations, ["ap", "us"]);
    assert_eq!(s.depths, [("ap".into(), 2), ("us".into(), 3)]);
    let ids = |p: &Vec<Pending>| p.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&s.pending[0]), [1, 3, 5], "us, in order");
    assert_eq!(ids(&s.pending[1]), [2, 4], "ap, in order");
    assert!(s.pending[2].is_empty(), "sa was cleared");
    assert_eq!(s.pending[0][0].item, submission(1));
    assert_eq!(
        s.pending[0][0].traceparent,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(s.pending[0][1].traceparent, "");
    assert_eq!(s.pending[1][1].item, distribution(2));
}

/// A SQLite data center in `dir`, populated, with its snapshot; closed
/// again when this returns, as a stopped service center leaves it.
async fn sqlite_region(dir: &Path) -> Snapshot {
    let dc = DataCenter::open(&dir.join(DB_FILE)).unwrap();
    populate(&dc).await;
    let before = dc.read(snapshot).await.unwrap();
    assert_populated(&before);
    before
}

/// The settings of database `name`, with its connection string in a file.
fn settings(server: &Postgres, name: &str, dir: &Path) -> Settings {
    let url_file = dir.join(format!("{name}.url"));
    std::fs::write(&url_file, server.create_database(name).unwrap()).unwrap();
    Settings {
        url_file,
        ca_file: None,
    }
}

async fn export(data_dir: &Path, out: &Path) -> Result<transfer::Counts, Error> {
    let (data_dir, out) = (data_dir.to_path_buf(), out.to_path_buf());
    tokio::task::spawn_blocking(move || transfer::export(&data_dir, &out))
        .await
        .unwrap()
}

async fn import(dump: &Path, settings: &Settings) -> Result<transfer::Counts, Error> {
    let (dump, settings) = (dump.to_path_buf(), settings.clone());
    tokio::task::spawn_blocking(move || transfer::import(&dump, &settings))
        .await
        .unwrap()
}

async fn connect(settings: &Settings) -> DataCenter {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || DataCenter::connect(&settings))
        .await
        .unwrap()
        .unwrap()
}

/// Rows per table in database `name`, counted by psql.
fn rows(server: &Postgres, name: &str) -> Vec<(String, i64)> {
    Table::ALL
        .iter()
        .map(|t| {
            let count = server
                .psql(name, &format!("SELECT count(*) FROM {}", t.name()))
                .unwrap();
            (t.name().to_string(), count.trim().parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_region_moves_from_sqlite_to_postgres_with_everything_it_holds() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = sqlite_region(dir.path()).await;
    let dump = dir.path().join("eu.dump");
    let exported = export(dir.path(), &dump).await.unwrap();
    assert_eq!(exported.get(Table::Messages), 23 + 7 + 3);
    assert_eq!(exported.get(Table::Outbox), 5);

    let server = Postgres::start().unwrap();
    let pg = settings(&server, "eu", dir.path());
    let imported = import(&dump, &pg).await.unwrap();
    assert_eq!(imported, exported);

    let dc = connect(&pg).await;
    let after = dc.read(snapshot).await.unwrap();
    assert_populated(&after);
    assert_eq!(after, before);

    // The region goes on where it stopped: the next seq, new sessions, and
    // outbox ids after every id the SQLite file gave (the cleared 6 too).
    let seq = dc
        .write(|tx| sequence(tx, "team@eu", "bob@eu", "after the move"))
        .await
        .unwrap();
    assert_eq!(seq, 24);
    dc.write(|tx| tx.insert_session("ann@eu", &tokens(4)))
        .await
        .unwrap();
    let pending = dc
        .write(|tx| {
            tx.enqueue("us", &submission(4), "", NOW + 9)?;
            tx.pending("us", 0, 100)
        })
        .await
        .unwrap();
    let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
    assert_eq!(ids, [1, 3, 5, 7]);
}

#[tokio::test]
async fn an_import_into_a_database_that_holds_a_region_is_refused_and_changes_nothing() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sqlite_region(dir.path()).await;
    let dump = dir.path().join("eu.dump");
    export(dir.path(), &dump).await.unwrap();
    let server = Postgres::start().unwrap();

    // Imported once, then again over it.
    let pg = settings(&server, "eu", dir.path());
    import(&dump, &pg).await.unwrap();
    let held = rows(&server, "eu");
    let refused = import(&dump, &pg).await.unwrap_err();
    assert!(
        matches!(&refused, Error::FailedPrecondition(m)
            if m.contains("already holds a data center (rows in users, sessions, assertions, groups, members, messages, accepted, sequenced_keys, outbox)")),
        "{refused:?}"
    );
    assert_eq!(rows(&server, "eu"), held);

    // A database where a service center already registered one user.
    let other = settings(&server, "other", dir.path());
    connect(&other)
        .await
        .write(|tx| tx.insert_user("zed@eu", "h", NOW))
        .await
        .unwrap();
    let refused = import(&dump, &other).await.unwrap_err();
    assert!(
        matches!(&refused, Error::FailedPrecondition(m) if m.contains("(rows in users)")),
        "{refused:?}"
    );
    let mut expected: Vec<(String, i64)> = Table::ALL
        .iter()
        .map(|t| (t.name().to_string(), 0))
        .collect();
    expected[0].1 = 1;
    assert_eq!(rows(&server, "other"), expected);
}

#[tokio::test]
async fn a_cut_dump_is_refused_and_leaves_the_database_empty() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    sqlite_region(dir.path()).await;
    let dump = dir.path().join("eu.dump");
    export(dir.path(), &dump).await.unwrap();
    let whole = std::fs::read(&dump).unwrap();
    let line_ends: Vec<usize> = whole
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let server = Postgres::start().unwrap();
    let pg = settings(&server, "eu", dir.path());
    let empty: Vec<(String, i64)> = Table::ALL
        .iter()
        .map(|t| (t.name().to_string(), 0))
        .collect();

    // Cut in the middle of a line, and cut after a whole line (only the
    // trailer is missing): both after many rows were inserted.
    let middle = line_ends[line_ends.len() / 2] + 10;
    let before_trailer = line_ends[line_ends.len() - 2] + 1;
    for (cut, says) in [
        (middle, "cut off (no line end): the dump is truncated"),
        (
            before_trailer,
            "the dump ends here without its trailer: it is truncated",
        ),
    ] {
        let cut_dump = dir.path().join(format!("cut-{cut}.dump"));
        std::fs::write(&cut_dump, &whole[..cut]).unwrap();
        let refused = import(&cut_dump, &pg).await.unwrap_err();
        assert!(
            matches!(&refused, Error::InvalidArgument(m) if m.ends_with(says)),
            "{refused:?}"
        );
        assert_eq!(
            rows(&server, "eu"),
            empty,
            "nothing of {cut_dump:?} is kept"
        );
    }

    // A row the database refuses, late in the dump, also undoes the rest.
    let text = String::from_utf8(whole.clone()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last_row = lines.len() - 2;
    let duplicate = lines[last_row - 1].to_string();
    lines[last_row] = &duplicate;
    let bad = dir.path().join("duplicate.dump");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let refused = import(&bad, &pg).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Internal(m) if m.contains(&format!("dump line {} (outbox)", last_row + 1)) && m.contains("23505")),
        "{refused:?}"
    );
    assert_eq!(rows(&server, "eu"), empty);

    // The whole dump still goes in.
    import(&dump, &pg).await.unwrap();
    assert_eq!(rows(&server, "eu")[0], ("users".into(), 3));
    let version = server
        .psql("eu", "SELECT max(version) FROM schema_versions")
        .unwrap();
    assert_eq!(version.trim(), migrations::current_version().to_string());
}

#[tokio::test]
async fn an_export_beside_a_running_service_center_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    sqlite_region(dir.path()).await;
    let running = DataCenter::open(&dir.path().join(DB_FILE)).unwrap();
    let out = dir.path().join("eu.dump");
    let refused = export(dir.path(), &out).await.unwrap_err();
    assert!(
        matches!(&refused, Error::FailedPrecondition(m)
            if m.contains("is in use") && m.contains("data-center.lock") && m.contains("stop it first")),
        "{refused:?}"
    );
    assert!(!out.exists());
    assert!(!PathBuf::from(format!("{}.tmp", out.display())).exists());
    drop(running);
    export(dir.path(), &out).await.unwrap();
}

/// The binary as an operator runs it: what it prints, its exit codes and
/// the dump's mode.
#[tokio::test]
async fn the_binary_exports_and_imports_and_says_what_it_did() {
    use std::os::unix::fs::PermissionsExt;
    let tool = binary("meridian-data-center");
    let dir = tempfile::tempdir().unwrap();
    sqlite_region(dir.path()).await;
    let dump = dir.path().join("eu.dump");

    let running = DataCenter::open(&dir.path().join(DB_FILE)).unwrap();
    let refused = Command::new(&tool)
        .args(["export", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("meridian-data-center: the data center"),
        "{stderr}"
    );
    assert!(stderr.contains("is in use"), "{stderr}");
    drop(running);

    let exported = Command::new(&tool)
        .args(["export", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(&dump)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&exported.stdout);
    assert!(
        exported.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(stdout.contains("messages        33\n"), "{stdout}");
    assert!(stdout.contains("exported 62 rows to"), "{stdout}");
    assert_eq!(
        std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );

    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let pg = settings(&server, "eu", dir.path());
    let run_import = |dump: &Path| {
        Command::new(&tool)
            .args(["import", "--in"])
            .arg(dump)
            .arg("--postgres-url-file")
            .arg(&pg.url_file)
            .output()
            .unwrap()
    };
    let imported = run_import(&dump);
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(stdout.contains("outbox          5\n"), "{stdout}");
    assert!(stdout.contains("imported 62 rows from"), "{stdout}");
    let again = run_import(&dump);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds a data center"), "{stderr}");
}

const LOCAL_REGIONS: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec: {cluster: default}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: default}
";

/// The README's local-mode steps with the real binaries: a chat on eu's
/// SQLite file, local mode stopped, eu exported and imported, local mode
/// started again with `--postgres eu=URL`: the same users log in with
/// their passwords, the histories and groups read the same, and the
/// groups go on from their last seq.
#[test]
fn a_local_mode_region_moves_to_postgres_and_keeps_its_chat() {
    use meridian_tests::local_mode::{LocalMode, as_user, ok};
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("regions.yaml");
    std::fs::write(&manifest, LOCAL_REGIONS).unwrap();
    let state = dir.path().join("state");
    let mut local = LocalMode::start(std::slice::from_ref(&manifest), &state);
    for user in ["ann@eu", "cat@eu", "bob@us"] {
        ok(local.cli(&as_user(user, &["register"])));
    }
    ok(local.cli(&as_user("ann@eu", &["group", "create", "lobby"])));
    ok(local.cli(&as_user("cat@eu", &["group", "create", "crew"])));
    for (user, group) in [
        ("bob@us", "lobby@eu"),
        ("cat@eu", "lobby@eu"),
        ("ann@eu", "crew@eu"),
    ] {
        ok(local.cli(&as_user(user, &["group", "join", group])));
    }
    for (user, group, text) in [
        ("ann@eu", "lobby@eu", "one"),
        ("bob@us", "lobby@eu", "two, from us"),
        ("cat@eu", "crew@eu", "crew one"),
        ("cat@eu", "lobby@eu", "three"),
        ("ann@eu", "crew@eu", "crew two"),
    ] {
        ok(local.cli(&as_user(user, &["send", group, text])));
    }
    let read = |local: &LocalMode| {
        [
            ok(local.cli(&as_user("ann@eu", &["--json", "history", "lobby@eu"]))),
            ok(local.cli(&as_user("cat@eu", &["--json", "history", "crew@eu"]))),
            ok(local.cli(&as_user("bob@us", &["--json", "group", "get", "lobby@eu"]))),
            ok(local.cli(&as_user("ann@eu", &["--json", "group", "get", "crew@eu"]))),
        ]
    };
    let before = read(&local);
    assert_eq!(before[0].lines().count(), 3, "{}", before[0]);
    assert_eq!(before[1].lines().count(), 2, "{}", before[1]);
    assert!(local.stop().success());

    let tool = binary("meridian-data-center");
    let dump = dir.path().join("eu.dump");
    let exported = Command::new(&tool)
        .args(["export", "--data-dir"])
        .arg(state.join("eu/data"))
        .arg("--out")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let server = Postgres::start().unwrap();
    let url = server.create_database("eu").unwrap();
    let url_file = dir.path().join("eu-postgres-url");
    std::fs::write(&url_file, &url).unwrap();
    let imported = Command::new(&tool)
        .args(["import", "--in"])
        .arg(&dump)
        .arg("--postgres-url-file")
        .arg(&url_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(stdout.contains("users           2\n"), "{stdout}");
    assert!(stdout.contains("messages        5\n"), "{stdout}");

    // The SQLite file is left as it was, but eu now runs on PostgreSQL.
    std::fs::rename(state.join("eu/data"), dir.path().join("eu-sqlite")).unwrap();
    let postgres_arg = format!("eu={url}");
    let local = LocalMode::start_with(&[manifest], &state, &["--postgres", &postgres_arg]);
    assert!(!state.join("eu/data/data-center.sqlite").exists());
    // Local mode is ready once its links are up too, so us reaches eu at once.
    assert_eq!(read(&local), before);
    let sent = ok(local.cli(&as_user("bob@us", &["--json", "send", "lobby@eu", "four"])));
    let sent: serde_json::Value = serde_json::from_str(sent.trim()).unwrap();
    assert_eq!(sent["seq"], 4, "{sent}");
    let sent = ok(local.cli(&as_user("ann@eu", &["send", "crew@eu", "crew three"])));
    assert!(sent.contains("seq 3"), "{sent}");
    let wrong = local.cli(&["--user", "ann@eu", "--password", "wrong-pass", "login"]);
    assert!(
        !wrong.status.success(),
        "the password hash moved, not a blank one"
    );
}
