//! The data center's PostgreSQL groundwork against a real server (Debian's
//! PostgreSQL, `tests/postgres/install`): the harness starts, answers and
//! restarts with its data kept; the schema migrates from empty, once, even
//! with several replicas starting at once; its uniqueness constraints hold.
//!
//! The harness runs the server as `nobody` when the tests run as root, and
//! may install the packages; as another user these tests need PostgreSQL
//! installed already (`tests/postgres/install --check`), and are skipped
//! loudly otherwise.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use meridian_node::Error;
use meridian_node::service_center::data_center::postgres::PgTx;
use meridian_node::service_center::data_center::postgres::migrations::{
    self, MIGRATIONS, current_version,
};
use meridian_node::service_center::data_center::tx::{Groups, Outbox};
use meridian_tests::conformance::{self, Backend, CHECKS, Job, Output};
use meridian_tests::postgres::{Postgres, Stop};
use postgres::{Client, IsolationLevel, NoTls};

fn available() -> bool {
    meridian_tests::postgres::available("POSTGRES TEST")
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// The SQLSTATE of a failed statement.
fn sqlstate(result: Result<u64, postgres::Error>) -> String {
    let err = result.expect_err("the statement was refused");
    err.as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"))
        .code()
        .code()
        .to_string()
}

const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

#[test]
fn the_server_starts_answers_restarts_and_keeps_its_data() {
    if !available() {
        return;
    }
    let started = Instant::now();
    let mut server = Postgres::start().unwrap();
    let start_time = started.elapsed();
    let mut client = connect(&server.url());
    client
        .batch_execute("CREATE TABLE kept (n BIGINT PRIMARY KEY); INSERT INTO kept VALUES (1)")
        .unwrap();

    // As in a crash: the server recovers the committed row from its WAL.
    let crash = server.restart_with(Stop::Immediate).unwrap();
    assert!(
        client.simple_query("SELECT 1").is_err(),
        "the old connection went with the server"
    );
    let mut client = connect(&server.url());
    client.execute("INSERT INTO kept VALUES (2)", &[]).unwrap();

    let fast = server.restart_with(Stop::Fast).unwrap();
    let mut client = connect(&server.url());
    let rows: Vec<i64> = client
        .query("SELECT n FROM kept ORDER BY n", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [1, 2], "both rows survive the restarts");
    eprintln!(
        "postgres: started in {:.2} s, immediate restart {:.2} s, fast restart {:.2} s",
        start_time.as_secs_f64(),
        crash.as_secs_f64(),
        fast.as_secs_f64()
    );
}

#[test]
fn migrations_run_from_empty_and_then_have_nothing_to_do() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let mut client = connect(&server.url());
    assert_eq!(migrations::version(&mut client).unwrap(), 0);

    let applied = migrations::migrate(&mut client).unwrap();
    let every: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, every);
    assert_eq!(migrations::version(&mut client).unwrap(), current_version());
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY table_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "accepted",
            "assertions",
            "carried_runs",
            "groups",
            "members",
            "messages",
            "outbox",
            "outbox_leases",
            "schema_versions",
            "sequenced_keys",
            "sessions",
            "users"
        ]
    );
    assert!(migrations::migrate(&mut client).unwrap().is_empty());

    // A schema from a newer build is refused, not written to.
    client
        .execute(
            "INSERT INTO schema_versions (version, description) VALUES ($1, 'from the future')",
            &[&(current_version() + 1)],
        )
        .unwrap();
    let refused = migrations::migrate(&mut client).unwrap_err();
    assert!(
        matches!(&refused, Error::FailedPrecondition(m) if m.contains("newer than this build")),
        "{refused:?}"
    );
}

#[test]
fn replicas_starting_at_once_apply_each_migration_exactly_once() {
    if !available() {
        return;
    }
    const REPLICAS: usize = 4;
    let server = Postgres::start().unwrap();
    let url = server.create_database("fresh").unwrap();
    // Connected first, then released together, so they race for real.
    let mut clients = Vec::new();
    for _ in 0..REPLICAS {
        clients.push(connect(&url));
    }
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let replicas: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                migrations::migrate(&mut client)
            })
        })
        .collect();
    let mut applied = Vec::new();
    for replica in replicas {
        applied.extend(
            replica
                .join()
                .unwrap()
                .expect("every replica's migration succeeds"),
        );
    }
    applied.sort();
    let every: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(
        applied, every,
        "each version applied by exactly one replica"
    );
    let mut client = connect(&url);
    let rows: Vec<i32> = client
        .query("SELECT version FROM schema_versions ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, every);
}

#[test]
fn the_schema_refuses_a_duplicate_seq_message_or_idempotency_key() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let mut client = connect(&server.url());
    migrations::migrate(&mut client).unwrap();

    let message = "INSERT INTO messages (group_id, seq, message_id, sender, body, sent_at_ms)
                   VALUES ($1, $2, $3, 'ann@eu', 'hi', 1)";
    client
        .execute(message, &[&"team@eu", &1i64, &"m1"])
        .unwrap();
    client
        .execute(message, &[&"team@eu", &2i64, &"m2"])
        .unwrap();
    client
        .execute(message, &[&"other@eu", &1i64, &"m3"])
        .unwrap();
    assert_eq!(
        sqlstate(client.execute(message, &[&"team@eu", &1i64, &"m4"])),
        UNIQUE_VIOLATION,
        "a second message with the same (group, seq)"
    );
    assert_eq!(
        sqlstate(client.execute(message, &[&"team@eu", &3i64, &"m1"])),
        UNIQUE_VIOLATION,
        "a second message with the same id"
    );

    let accepted =
        "INSERT INTO accepted (message_id, group_id, sender, idempotency_key, accepted_at_ms)
                    VALUES ($1, 'team@eu', 'ann@eu', $2, 1)";
    let key = Some("k1");
    let none: Option<&str> = None;
    client.execute(accepted, &[&"a1", &key]).unwrap();
    assert_eq!(
        sqlstate(client.execute(accepted, &[&"a2", &key])),
        UNIQUE_VIOLATION,
        "the same sender, group and idempotency key"
    );
    // Sends without a key are never duplicates of each other.
    client.execute(accepted, &[&"a3", &none]).unwrap();
    client.execute(accepted, &[&"a4", &none]).unwrap();

    let sequenced = "INSERT INTO sequenced_keys (group_id, sender, idempotency_key, message_id)
                     VALUES ('team@eu', 'bob@us', 'k1', $1)";
    client.execute(sequenced, &[&"m1"]).unwrap();
    assert_eq!(
        sqlstate(client.execute(sequenced, &[&"m9"])),
        UNIQUE_VIOLATION,
        "a key sequenced twice at the home"
    );

    assert_eq!(
        sqlstate(client.execute(
            "INSERT INTO members (group_id, user_id, role) VALUES ('nowhere@eu', 'ann@eu', 1)",
            &[],
        )),
        FOREIGN_KEY_VIOLATION,
        "a member of a group that does not exist"
    );
}

/// The PostgreSQL backend under the conformance suite: each job in its own
/// `READ COMMITTED` transaction, as the backend will run a flow.
struct Pg {
    client: std::sync::Mutex<Client>,
}

impl Pg {
    /// A fresh, migrated database `name` on `server`.
    fn open(server: &Postgres, name: &str) -> Self {
        let mut client = connect(&server.create_database(name).unwrap());
        migrations::migrate(&mut client).unwrap();
        Pg {
            client: std::sync::Mutex::new(client),
        }
    }
}

/// Runs `job` in a transaction of `client`, committing when it succeeds.
fn run_on<T>(
    client: &mut Client,
    job: impl FnOnce(&mut PgTx<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .map_err(|e| meridian_node::service_center::data_center::postgres::error("begin", e))?;
    let mut tx = PgTx::new(tx);
    let output = job(&mut tx)?;
    tx.commit()?;
    Ok(output)
}

impl Backend for Pg {
    fn run(&self, job: Job) -> Result<Output, Error> {
        run_on(&mut self.client.lock().unwrap(), |tx| job(tx))
    }
}

#[test]
fn postgres_passes_the_conformance_suite() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    for (name, check) in CHECKS {
        eprintln!("postgres: {name}");
        check(&Pg::open(&server, name));
    }
}

/// Four replicas' worth of connections sequence 50 messages each into one
/// group, each message in its own transaction that takes the group's lock
/// first: the seqs are exactly 1..=200, each stored once.
#[test]
fn concurrent_sequencing_has_no_gap_and_no_duplicate() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let url = server.create_database("concurrent").unwrap();
    let mut client = connect(&url);
    migrations::migrate(&mut client).unwrap();
    run_on(&mut client, |tx| {
        tx.create_group("g@eu", "G", "", "ann@eu", 1)
    })
    .unwrap();

    const THREADS: usize = 4;
    const EACH: usize = 50;
    let barrier = Arc::new(Barrier::new(THREADS));
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut client = connect(&url);
                barrier.wait();
                (0..EACH)
                    .map(|_| run_on(&mut client, |tx| conformance::sequence(tx, "g@eu")).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for thread in threads {
        let mine = thread.join().unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each replica's seqs rise"
        );
        seqs.extend(mine);
    }
    eprintln!(
        "{} sequenced by {THREADS} connections in {:?}",
        seqs.len(),
        started.elapsed()
    );
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=(THREADS * EACH) as u64).collect::<Vec<_>>());
    let (last, stored): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT (SELECT last_seq FROM groups WHERE id = 'g@eu'),
                        (SELECT count(DISTINCT seq) FROM messages WHERE group_id = 'g@eu')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((last, stored), (200, 200));
}

/// A second send with an idempotency key is `Unavailable` on PostgreSQL
/// (another replica won the key: retry and find its message), not
/// `Internal`; other errors the server answers with stay `Internal`.
#[test]
fn a_concurrent_idempotency_key_is_retryable() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let url = server.create_database("keys").unwrap();
    let (mut first, mut second) = (connect(&url), connect(&url));
    migrations::migrate(&mut first).unwrap();
    // Two transactions at once with the same key: the second waits on the
    // first's uncommitted row, then fails when the first commits.
    let tx = first.transaction().unwrap();
    let mut winner = PgTx::new(tx);
    meridian_node::service_center::data_center::tx::Messages::insert_accepted(
        &mut winner,
        "m1",
        "g@us",
        "ann@eu",
        Some("k"),
        1,
    )
    .unwrap();
    let loser = std::thread::spawn(move || {
        let result = run_on(&mut second, |tx| {
            meridian_node::service_center::data_center::tx::Messages::insert_accepted(
                tx,
                "m2",
                "g@us",
                "ann@eu",
                Some("k"),
                1,
            )
        });
        (result, second)
    });
    // The loser is blocked on the winner's row until it commits.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let mut watcher = connect(&url);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the second insert never waited");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    winner.commit().unwrap();
    let (result, mut second) = loser.join().unwrap();
    match result {
        Err(Error::Unavailable(message)) => assert!(message.contains("23505"), "{message}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    // The same on a sequenced key; a duplicate message id stays INTERNAL.
    run_on(&mut second, |tx| {
        meridian_node::service_center::data_center::tx::Messages::insert_sequenced_key(
            tx, "g@us", "ann@eu", "k", "m1",
        )
    })
    .unwrap();
    let again = run_on(&mut second, |tx| {
        meridian_node::service_center::data_center::tx::Messages::insert_sequenced_key(
            tx, "g@us", "ann@eu", "k", "m2",
        )
    });
    assert!(matches!(again, Err(Error::Unavailable(_))), "{again:?}");
    let duplicate_id = run_on(&mut second, |tx| {
        meridian_node::service_center::data_center::tx::Messages::insert_accepted(
            tx, "m1", "g@us", "bob@eu", None, 1,
        )
    });
    assert!(
        matches!(duplicate_id, Err(Error::Internal(_))),
        "{duplicate_id:?}"
    );
}

/// Two transactions that lock two groups in opposite orders deadlock; the
/// one PostgreSQL aborts (40P01) is `Unavailable`, so its flow is retried,
/// and the other commits.
#[test]
fn a_deadlock_is_retryable() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let url = server.create_database("deadlock").unwrap();
    let mut client = connect(&url);
    migrations::migrate(&mut client).unwrap();
    run_on(&mut client, |tx| {
        tx.create_group("a@eu", "A", "", "ann@eu", 1)?;
        tx.create_group("b@eu", "B", "", "ann@eu", 1)
    })
    .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [("a@eu", "b@eu"), ("b@eu", "a@eu")]
        .into_iter()
        .map(|(first, second)| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut client = connect(&url);
                run_on(&mut client, |tx| {
                    tx.lock_group(first)?;
                    barrier.wait(); // both hold their first lock
                    tx.lock_group(second)
                })
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let aborted: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(aborted.len(), 1, "{results:?}");
    match aborted[0] {
        Error::Unavailable(message) => assert!(message.contains("40P01"), "{message}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

/// The service center's connection (`DataCenter::connect`): over TLS when
/// given a CA, which must have issued the server's certificate for the
/// host it dials; a connection string that requires TLS without a CA to
/// check it with is refused before any connection; bad files are named.
#[tokio::test]
async fn the_data_center_connects_over_tls_checked_against_its_ca() {
    use meridian_node::service_center::data_center::DataCenter;
    use meridian_node::service_center::data_center::postgres::Settings;
    use meridian_node::trust::pki::{DEFAULT_LIFETIME, MeshCa};
    if !available() {
        return;
    }
    let mut server = Postgres::start().unwrap();
    let ca = MeshCa::generate("postgres").unwrap();
    let issued = ca
        .issue_region("db", "test", &["127.0.0.1".into()], DEFAULT_LIFETIME)
        .unwrap();
    server
        .enable_tls(&issued.cert_pem, &issued.key_pem)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let url = file("url", &server.create_database("tls").unwrap());
    let open = |url_file: &std::path::Path, ca_file: Option<std::path::PathBuf>| {
        let settings = Settings {
            url_file: url_file.to_owned(),
            ca_file,
        };
        async move {
            tokio::task::spawn_blocking(move || DataCenter::connect(&settings))
                .await
                .unwrap()
        }
    };

    let dc = open(&url, Some(file("ca.pem", &ca.cert_pem)))
        .await
        .expect("TLS checked against the CA");
    dc.write(|tx| tx.insert_user("ann@eu", "h", 1))
        .await
        .unwrap();
    let tls: bool = {
        let url = server.url_of("tls");
        tokio::task::spawn_blocking(move || {
            // The server's own view of that connection: it used TLS.
            let mut client = connect(&url);
            client
                .query_one(
                    "SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                     WHERE application_name = 'meridian-service-center'",
                    &[],
                )
                .unwrap()
                .get(0)
        })
        .await
        .unwrap()
    };
    assert!(tls, "the service center's connection is not encrypted");

    let other = MeshCa::generate("someone else").unwrap();
    let Err(refused) = open(&url, Some(file("other.pem", &other.cert_pem))).await else {
        panic!("a server certificate from another CA was accepted");
    };
    assert!(matches!(refused, Error::Unavailable(_)), "{refused:?}");

    let require = file(
        "require",
        &format!("{}?sslmode=require", server.url_of("tls")),
    );
    let Err(Error::FailedPrecondition(message)) = open(&require, None).await else {
        panic!("sslmode=require without a CA was accepted");
    };
    assert!(message.contains("--postgres-ca-file"), "{message}");
    let url_text = server.url_of("tls");
    let password = url_text
        .split_once(&format!("{}:", meridian_tests::postgres::USER))
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(password, _)| password.to_owned())
        .expect("a password in the URL");
    assert!(
        !message.contains(&password),
        "the error shows the password: {message}"
    );

    let Err(Error::FailedPrecondition(message)) = open(&dir.path().join("missing"), None).await
    else {
        panic!("a missing connection string file was accepted");
    };
    assert!(message.contains("missing"), "{message}");
}

/// Outbox ids come from a sequence, so with concurrent writers they are
/// not in commit order: an item can commit after the worker has read, and
/// carried, items with higher ids. Clearing what was carried must leave
/// that straggler in place, to be carried next.
#[test]
fn an_outbox_item_committed_late_survives_the_clear_of_later_ids() {
    if !available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let url = server.create_database("straggler").unwrap();
    let (mut slow, mut fast, mut worker) = (connect(&url), connect(&url), connect(&url));
    migrations::migrate(&mut worker).unwrap();

    // The slow writer takes the lower id and has not committed yet.
    let open = slow
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .unwrap();
    let mut open = PgTx::new(open);
    open.enqueue("us", &conformance::item(1), "", 1).unwrap();
    run_on(&mut fast, |tx| {
        tx.enqueue("us", &conformance::item(2), "", 1)
    })
    .unwrap();

    let carried = run_on(&mut worker, |tx| tx.pending("us", 0, 10)).unwrap();
    assert_eq!(
        carried.iter().map(|p| p.item.clone()).collect::<Vec<_>>(),
        vec![conformance::item(2)],
        "the worker sees only what has committed"
    );
    open.commit().unwrap();
    let ids: Vec<i64> = carried.iter().map(|p| p.id).collect();
    run_on(&mut worker, |tx| tx.clear("us", &ids)).unwrap();

    let left = run_on(&mut worker, |tx| tx.pending("us", 0, 10)).unwrap();
    assert_eq!(
        left.iter().map(|p| p.item.clone()).collect::<Vec<_>>(),
        vec![conformance::item(1)],
        "the straggler is still waiting to be carried"
    );
    assert!(left[0].id < ids[0], "its id is below the ones carried");
}
