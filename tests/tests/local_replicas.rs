//! Several service-center replicas of one region on a shared PostgreSQL
//! data center (docs/ARCHITECTURE.md §12, "Several replicas"), as a user
//! runs them: `meridian-operator local --postgres eu=URL` with
//! `serviceCenter.replicas: 2`, real processes over real sockets, and the
//! `meridian` CLI. One replica is killed with SIGKILL while a `listen`
//! runs on it: sends go through the other, from eu's own CLI and from
//! another region (whose batches eu's roaming system hands to a live
//! replica), and the listener resumes on the other replica with no gap and
//! no duplicate. Then the replica count changes while local mode runs, on
//! a server that speaks TLS: local mode reads the connection string from a
//! file (`--postgres eu=@FILE`) and gives its replicas the server's CA
//! (`--postgres-ca eu=FILE`).
//!
//! The PostgreSQL server is a throwaway one (`meridian_tests::postgres`);
//! as a user other than root the test needs PostgreSQL installed already
//! (`tests/postgres/install --check`) and is skipped loudly otherwise.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian_tests::local_mode::{LocalMode, alive, as_user, ok, signal};
use meridian_tests::postgres::Postgres;
use serde_json::Value;

fn available() -> bool {
    meridian_tests::postgres::available("LOCAL REPLICAS TEST")
}

const MANIFESTS: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec: {cluster: default, serviceCenter: {replicas: 2}}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: default}
";

/// Resumes a stopped process when dropped, so that a failed assertion
/// does not leave local mode stopped.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Self {
        signal(pid, "STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// Waits (at most `within`) for `condition`, polling.
fn wait_for(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `seq` a `send --json` printed.
fn seq_of(sent: &str) -> u64 {
    let sent: Value = serde_json::from_str(sent.trim()).expect("send prints JSON");
    assert_eq!(sent["queued"], false, "sequenced at once: {sent}");
    sent["seq"].as_u64().expect("a seq")
}

#[test]
fn a_killed_replica_leaves_the_region_serving_and_a_listener_resumes_without_gap_or_duplicate() {
    if !available() {
        return;
    }
    let postgres = Postgres::start().unwrap();
    let database = postgres.create_database("eu").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("regions.yaml");
    std::fs::write(&manifest, MANIFESTS).unwrap();
    let state = dir.path().join("state");
    let postgres_arg = format!("eu={database}");
    let local = LocalMode::start_with(&[manifest], &state, &["--postgres", &postgres_arg]);

    // What local mode wrote: two clients for eu, the first also `client`;
    // one for us; both pair URLs in eu's mesh configuration; the
    // connection string readable by its owner alone.
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("endpoints.json")).unwrap())
            .unwrap();
    let eu_clients = endpoints["regions"]["eu"]["clients"].as_array().unwrap();
    assert_eq!(eu_clients.len(), 2, "{endpoints}");
    assert_eq!(eu_clients[0], endpoints["regions"]["eu"]["client"]);
    assert_ne!(eu_clients[0], eu_clients[1]);
    assert_eq!(
        endpoints["regions"]["us"]["clients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mesh: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(state.join("eu/mesh.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        mesh["serviceCenter"]["replicas"]
            .as_sequence()
            .unwrap()
            .len(),
        2,
        "{mesh:?}"
    );
    let url_file = state.join("eu/postgres-url");
    assert_eq!(std::fs::read_to_string(&url_file).unwrap(), database);
    assert_eq!(
        std::fs::metadata(&url_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let replicas = [
        local.pid("eu", "service-center"),
        local.pid("eu", "service-center-1"),
    ];
    assert!(replicas.iter().all(|p| alive(*p)), "both replicas run");

    // Local mode is ready once every process serves; the link between
    // the regions comes up with the first heartbeats after that.
    for (from, to) in [("us", "eu"), ("eu", "us")] {
        wait_for(Duration::from_secs(30), "the link is up", || {
            let out = local.cli(&["--json", "--region", from, "mesh", "status"]);
            String::from_utf8_lossy(&out.stdout).lines().any(|line| {
                serde_json::from_str::<Value>(line)
                    .is_ok_and(|link| link["peer"] == to && link["state"] == "Up")
            })
        });
    }

    // A chat: ann at eu, bob at us, in a group homed at eu.
    for user in ["ann@eu", "bob@us"] {
        ok(local.cli(&as_user(user, &["register"])));
    }
    ok(local.cli(&as_user("ann@eu", &["group", "create", "lobby"])));
    ok(local.cli(&as_user("bob@us", &["group", "join", "lobby@eu"])));
    let send = |user: &str, text: &str| {
        seq_of(&ok(
            local.cli(&as_user(user, &["--json", "send", "lobby@eu", text]))
        ))
    };
    assert_eq!(send("ann@eu", "one"), 1);

    // ann listens at eu: on the first replica, the first client listed.
    let mut listener = local
        .cli_command(&as_user(
            "ann@eu",
            &[
                "--json",
                "listen",
                "--after",
                "lobby@eu=0",
                "--count",
                "6",
                "--timeout",
                "120",
            ],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = lines_tx.send(line);
        }
    });
    let mut deliveries: Vec<Value> = Vec::new();
    let receive_until = |seq: u64, deliveries: &mut Vec<Value>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while deliveries.last().and_then(|d| d["seq"].as_u64()) < Some(seq) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("the listener printed no seq {seq}: {e}"));
            let value: Value = serde_json::from_str(&line).unwrap();
            if value.get("sender").is_some() {
                deliveries.push(value);
            }
        }
    };
    receive_until(1, &mut deliveries);

    // The first replica dies, and local mode is held still so that it
    // stays dead while the region is checked on the other alone.
    let held = Stopped::stop(local.operator_pid());
    signal(replicas[0], "KILL");
    wait_for(Duration::from_secs(10), "the first replica dies", || {
        !alive(replicas[0])
    });

    // eu's CLI passes over the dead replica to the live one.
    assert_eq!(send("ann@eu", "two"), 2);
    // From us: the batch reaches eu's roaming system, which hands it to
    // the live replica (calls take turns, so over two sends at least one
    // falls to the dead replica first).
    assert_eq!(send("bob@us", "three"), 3);
    assert_eq!(send("bob@us", "four"), 4);
    receive_until(4, &mut deliveries);

    // Local mode goes on, and restarts the first replica.
    drop(held);
    wait_for(
        Duration::from_secs(60),
        "the first replica is restarted",
        || {
            std::fs::read_to_string(state.join("eu/service-center.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .is_some_and(|pid| pid != replicas[0] && alive(pid))
        },
    );
    let mut fifth = None;
    wait_for(
        Duration::from_secs(60),
        "a send at eu after the restart",
        || {
            let out = local.cli(&as_user("ann@eu", &["--json", "send", "lobby@eu", "five"]));
            if out.status.success() {
                fifth = Some(seq_of(&String::from_utf8_lossy(&out.stdout)));
            }
            fifth.is_some()
        },
    );
    assert_eq!(fifth, Some(5));
    assert_eq!(send("bob@us", "six"), 6);
    receive_until(6, &mut deliveries);

    let status = listener.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut listener.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "listen: {status}: {stderr}");
    let seqs: Vec<u64> = deliveries
        .iter()
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "no gap, no duplicate");
    let bodies: Vec<&str> = deliveries
        .iter()
        .map(|d| d["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["one", "two", "three", "four", "five", "six"]);

    // Both regions read the same history (us's copy once eu's outbox has
    // carried the messages there, whichever replica holds it now).
    for user in ["ann@eu", "bob@us"] {
        let mut history = String::new();
        wait_for(Duration::from_secs(60), "six messages in history", || {
            history = ok(local.cli(&as_user(user, &["history", "lobby@eu"])));
            history.lines().count() == 6
        });
    }
}

#[test]
fn several_replicas_without_postgres_and_postgres_for_an_unknown_region_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("regions.yaml");
    std::fs::write(&manifest, MANIFESTS).unwrap();
    let refusal = |name: &str, args: &[&str]| {
        let state = dir.path().join(name);
        let mut local = LocalMode::launch(std::slice::from_ref(&manifest), &state, args);
        let status = local.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{name}: refused");
        let log = std::fs::read_to_string(local.log()).unwrap();
        assert!(!state.join("eu").exists(), "{name}: nothing started\n{log}");
        log
    };
    let log = refusal("without", &[]);
    assert!(
        log.contains("spec.serviceCenter.replicas") && log.contains("--postgres REGION=URL"),
        "{log}"
    );
    let log = refusal(
        "unknown",
        &[
            "--postgres",
            "eu=postgresql://127.0.0.1:9/eu",
            "--postgres",
            "ap=postgresql://127.0.0.1:9/ap",
        ],
    );
    assert!(
        log.contains("--postgres ap: region ap is not in the manifests (regions: eu, us)"),
        "{log}"
    );
}

/// The client URLs endpoints.json lists for `region`.
fn clients(state: &std::path::Path, region: &str) -> Vec<String> {
    std::fs::read_to_string(state.join("endpoints.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|e| {
            e["regions"][region]["clients"].as_array().map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn a_changed_replica_count_starts_and_stops_replicas() {
    if !available() {
        return;
    }
    let mut postgres = Postgres::start().unwrap();
    let database = postgres.create_database("eu").unwrap();
    // Here the server speaks TLS, and local mode is given the connection
    // string in a file (`eu=@FILE`) and the server's CA (`--postgres-ca`).
    let server_ca = meridian_node::trust::pki::MeshCa::generate("postgres").unwrap();
    let issued = server_ca
        .issue_region(
            "db",
            "test",
            &["127.0.0.1".into()],
            meridian_node::trust::pki::DEFAULT_LIFETIME,
        )
        .unwrap();
    postgres
        .enable_tls(&issued.cert_pem, &issued.key_pem)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("regions.yaml");
    let with = |n: usize| MANIFESTS.replace("replicas: 2", &format!("replicas: {n}"));
    std::fs::write(&manifest, with(1)).unwrap();
    let state = dir.path().join("state");
    let url_file = dir.path().join("eu-url");
    std::fs::write(&url_file, format!("{database}\n")).unwrap();
    let ca_file = dir.path().join("db-ca.crt");
    std::fs::write(&ca_file, &server_ca.cert_pem).unwrap();
    let postgres_arg = format!("eu=@{}", url_file.display());
    let ca_arg = format!("eu={}", ca_file.display());
    let local = LocalMode::start_with(
        std::slice::from_ref(&manifest),
        &state,
        &["--postgres", &postgres_arg, "--postgres-ca", &ca_arg],
    );
    assert_eq!(clients(&state, "eu").len(), 1);
    assert_eq!(
        std::fs::read_to_string(state.join("eu/postgres-url")).unwrap(),
        database,
        "the URL read from the file, without its line end"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", local.operator_pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&database),
        "the connection string is on local mode's command line"
    );
    ok(local.cli(&as_user("ann@eu", &["register"])));

    std::fs::write(&manifest, with(3)).unwrap();
    wait_for(Duration::from_secs(30), "three clients listed", || {
        clients(&state, "eu").len() == 3
    });
    let third = clients(&state, "eu")[2].clone();
    // The new replica serves: ann logs in there alone.
    let ca = state.join("pki/ca.crt");
    wait_for(Duration::from_secs(60), "the third replica serves", || {
        let out = local.cli(&[
            "--server",
            &third,
            "--ca",
            ca.to_str().unwrap(),
            "--user",
            "ann@eu",
            "--password",
            "secret-pass",
            "login",
        ]);
        out.status.success()
    });
    let mesh = std::fs::read_to_string(state.join("eu/mesh.yaml")).unwrap();
    let mesh: serde_yaml::Value = serde_yaml::from_str(&mesh).unwrap();
    assert_eq!(
        mesh["serviceCenter"]["replicas"]
            .as_sequence()
            .unwrap()
            .len(),
        3
    );
    // Every replica's connections to the database are encrypted.
    let (tls, all) = postgres
        .psql(
            "eu",
            "SELECT count(*) FILTER (WHERE ssl), count(*) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'meridian-service-center'",
        )
        .unwrap()
        .trim()
        .split_once('|')
        .map(|(tls, all)| (tls.to_owned(), all.to_owned()))
        .expect("two counts");
    assert!(
        all != "0" && tls == all,
        "{tls} of {all} connections use TLS"
    );
    let dropped = local.pid("eu", "service-center-2");

    std::fs::write(&manifest, with(2)).unwrap();
    wait_for(Duration::from_secs(30), "two clients listed", || {
        clients(&state, "eu").len() == 2
    });
    wait_for(Duration::from_secs(30), "the third replica stops", || {
        !alive(dropped)
    });
    assert!(
        alive(local.pid("eu", "service-center-1")),
        "the second stays"
    );
}
