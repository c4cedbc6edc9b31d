//! Local mode on the example manifests, driven by the `meridian` CLI: a chat
//! between users of three regions through real processes.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use meridian_tests::local_mode::{
    LocalMode, alive, as_user, ok, processes_under, regions_manifest, signal, workspace_root,
};
use serde_json::Value;

fn failed(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got {:?}",
        output
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_chat_between_regions_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut local = LocalMode::start(
        &[workspace_root().join("examples/three-regions.yaml")],
        &state,
    );

    // Ready means linked: endpoints.json is written once every region's
    // roaming system has had its links to the others Up, so the first
    // cross-region call below finds no region unreachable.
    let log = std::fs::read_to_string(local.log()).unwrap();
    assert!(
        log.contains("every link between the regions is up"),
        "local mode was ready without its links: {log}"
    );
    // Read once, later: a link may since have missed heartbeats on a loaded
    // machine (it is then Detoured through the third region), but no
    // region is cut off from another.
    for region in ["eu", "us", "ap"] {
        let links = ok(local.cli(&["--json", "mesh", "status", "--region", region]));
        let states: Vec<(String, String)> = links
            .lines()
            .map(|l| {
                let link: Value = serde_json::from_str(l).unwrap();
                let field = |k: &str| link[k].as_str().unwrap_or_default().to_owned();
                (field("peer"), field("state"))
            })
            .collect();
        assert_eq!(states.len(), 2, "{region}: {links}");
        assert!(
            states
                .iter()
                .all(|(_, state)| state == "Up" || state == "Detoured"),
            "{region}'s links after local mode said it was ready: {states:?}"
        );
    }

    for user in ["ann@eu", "bob@us", "cat@ap"] {
        assert_eq!(
            ok(local.cli(&as_user(user, &["register"]))).trim(),
            format!("registered {user}")
        );
    }
    let group = ok(local.cli(&as_user("ann@eu", &["group", "create", "lobby"])));
    assert_eq!(group.trim(), "lobby@eu");
    ok(local.cli(&as_user("bob@us", &["group", "join", "lobby@eu"])));
    ok(local.cli(&as_user("cat@ap", &["group", "join", "lobby@eu"])));

    // bob listens at his home region while the others talk.
    let mut listener = local
        .cli_command(&as_user(
            "bob@us",
            &["--json", "listen", "--count", "3", "--timeout", "30"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));

    let first = ok(local.cli(&as_user("ann@eu", &["send", "lobby@eu", "hello from eu"])));
    ok(local.cli(&as_user("cat@ap", &["send", "lobby@eu", "hello from ap"])));
    // A retry with the same key is the same message.
    let sent = ok(local.cli(&as_user(
        "bob@us",
        &["--json", "send", "lobby@eu", "hi all", "--key", "k1"],
    )));
    let again = ok(local.cli(&as_user(
        "bob@us",
        &["--json", "send", "lobby@eu", "hi all", "--key", "k1"],
    )));
    let sent: Value = serde_json::from_str(&sent).unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(sent["messageId"], again["messageId"]);
    assert_eq!(again["duplicate"], true);
    // Sent from us to a group homed at eu: eu's seq, not `queued`.
    assert_eq!(
        (&sent["seq"], &sent["queued"]),
        (&Value::from(3), &Value::from(false))
    );
    assert_eq!(again["seq"], sent["seq"]);
    // A refusal by the home exits non-zero with the reason.
    let nope = failed(local.cli(&as_user("ann@eu", &["send", "nope@us", "hi"])));
    assert!(nope.contains("group nope@us does not exist"), "{nope}");

    let lines: Vec<Value> = BufReader::new(listener.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(listener.wait().unwrap().success());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // `send` prints the message id, then its seq.
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>()[1..],
        ["seq", "1"]
    );
    assert_eq!(lines[0]["id"], first.split_whitespace().next().unwrap());
    assert_eq!(lines[0]["sender"], "ann@eu");
    assert_eq!(lines[0]["group"], "lobby@eu");

    // History reads the same from any region.
    let history = ok(local.cli(&as_user("cat@ap", &["--json", "history", "lobby@eu"])));
    assert_eq!(history.lines().count(), 3);

    // Errors are readable and exit non-zero.
    let missing = failed(local.cli(&as_user("bob@us", &["group", "get", "nope@eu"])));
    assert!(
        missing.contains("group nope@eu does not exist"),
        "{missing}"
    );
    let refused = failed(local.cli(&as_user(
        "bob@us",
        &["group", "update", "lobby@eu", "--announcement", "x"],
    )));
    assert!(refused.contains("only the owner and admins"), "{refused}");
    let wrong = failed(local.cli(&["--user", "bob@us", "--password", "wrong-pass", "login"]));
    assert!(wrong.contains("invalid user or password"), "{wrong}");

    // A killed service center is restarted; nothing acknowledged is lost.
    let eu = local.pid("eu", "service-center");
    signal(eu, "KILL");
    let mut sent_after = None;
    for _ in 0..100 {
        let out = local.cli(&as_user("ann@eu", &["send", "lobby@eu", "after the crash"]));
        if out.status.success() {
            sent_after = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(sent_after.is_some(), "eu's service center came back");
    assert_ne!(local.pid("eu", "service-center"), eu);

    // SIGTERM stops every process; a restart on the same directory keeps the data.
    let pids = [
        local.pid("eu", "service-center"),
        local.pid("us", "roaming"),
    ];
    assert!(local.stop().success());
    assert!(pids.iter().all(|p| !alive(*p)), "node processes stopped");
    assert!(!state.join("endpoints.json").exists());
    local.restart();
    let history = ok(local.cli(&as_user("bob@us", &["history", "lobby@eu"])));
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(history.contains("after the crash"));
}

#[test]
fn a_malformed_manifest_is_refused_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("bad.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: eu}\nspec: {cluster: x, roaming: {replicas: 0}}\n",
    )
    .unwrap();
    let output =
        std::process::Command::new(meridian_tests::local_mode::binary("meridian-operator"))
            .args(["local", "-f"])
            .arg(&manifest)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
    let stderr = failed(output);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("spec.roaming.replicas"), "{stderr}");
}

/// Waits (at most `within`) until `done` holds.
fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_mesh_of_more_than_64_regions_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("many.yaml");
    std::fs::write(&manifest, regions_manifest(65)).unwrap();
    let state = dir.path().join("state");
    let output =
        std::process::Command::new(meridian_tests::local_mode::binary("meridian-operator"))
            .args(["local", "-f"])
            .arg(&manifest)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
    let stderr = failed(output);
    assert!(
        stderr.contains(
            "Region \"r64\" would be region 65 of 65 in namespace \"many\"; a mesh has at most 64 regions"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("many.yaml"), "{stderr}");
    assert!(!state.join("r0").exists(), "no region was set up");
}

#[test]
fn regions_that_would_not_fit_in_memory_are_refused_after_measuring_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let manifest = root.join("three.yaml");
    std::fs::write(&manifest, regions_manifest(3)).unwrap();
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    let mut local = LocalMode::launch(&[manifest], &state, &["--memory-budget", "100Mi"]);
    let status = local.wait_exit(Duration::from_secs(90));
    assert!(!status.success());
    let log = std::fs::read_to_string(local.log()).unwrap();
    assert!(log.contains("not enough memory for 3 regions"), "{log}");
    assert!(
        log.contains("measured resident in region r0's processes"),
        "{log}"
    );
    assert!(log.contains("--memory-budget allows 100.0 MiB"), "{log}");
    assert!(
        state.join("r0/service-center.log").exists(),
        "the first region was started and measured"
    );
    for region in ["r1", "r2"] {
        assert!(
            !state.join(region).join("service-center.log").exists(),
            "{region} was never started"
        );
    }
    eventually(Duration::from_secs(30), "r0's processes stopped", || {
        processes_under(&state).is_empty()
    });
}

#[test]
fn a_stop_during_startup_ends_every_child() {
    // Stopped as soon as the first region's processes run, and once
    // several regions' do; each time before every region serves.
    for (run, regions_started) in [(0, 1), (1, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let manifest = root.join("twelve.yaml");
        std::fs::write(&manifest, regions_manifest(12)).unwrap();
        let state = root.join(format!("state-{run}"));
        std::fs::create_dir(&state).unwrap();
        let mut local = LocalMode::launch(&[manifest], &state, &[]);

        let started = |state: &std::path::Path| {
            (0..12)
                .filter(|i| state.join(format!("r{i}/service-center.pid")).exists())
                .count()
        };
        eventually(Duration::from_secs(60), "regions started", || {
            started(&state) >= regions_started
        });
        let children = processes_under(&state)
            .into_iter()
            .filter(|p| *p != local.operator_pid())
            .collect::<Vec<_>>();
        signal(local.operator_pid(), "TERM");
        assert!(
            !state.join("endpoints.json").exists(),
            "every region served before the test could stop the startup"
        );
        assert!(!children.is_empty(), "node processes ran");

        let status = local.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "local mode stops cleanly: {status}");
        eventually(Duration::from_secs(30), "every child process gone", || {
            processes_under(&state).is_empty()
        });
        assert!(children.iter().all(|p| !alive(*p)));
    }
}

/// The `--max-subscriptions` a process was started with, from its command
/// line; `None` without the flag or once the process is gone.
fn max_subscriptions_of(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--max-subscriptions")?;
    args.get(at + 1).cloned()
}

/// The manifest's `spec.serviceCenter.maxSubscriptions` reaches the
/// region's service center as `--max-subscriptions`, and an edit restarts
/// it with the new bound while local mode runs; a bad value is refused
/// naming the field, and the running service center is kept.
#[test]
fn the_manifests_max_subscriptions_reaches_the_service_center_and_follows_edits() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("eu.yaml");
    let eu = |max: &str| {
        format!(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: eu}}\n\
             spec: {{cluster: x, serviceCenter: {{maxSubscriptions: {max}}}}}\n"
        )
    };
    std::fs::write(&manifest, eu("3")).unwrap();
    let state = dir.path().join("state");
    let local = LocalMode::start(std::slice::from_ref(&manifest), &state);
    let first = local.pid("eu", "service-center");
    assert_eq!(max_subscriptions_of(first).as_deref(), Some("3"));
    let roaming = local.pid("eu", "roaming");
    assert_eq!(max_subscriptions_of(roaming), None);

    std::fs::write(&manifest, eu("0")).unwrap();
    eventually(Duration::from_secs(10), "the refusal in the log", || {
        std::fs::read_to_string(local.log())
            .is_ok_and(|log| log.contains("spec.serviceCenter.maxSubscriptions"))
    });
    assert_eq!(local.pid("eu", "service-center"), first, "kept running");

    std::fs::write(&manifest, eu("5")).unwrap();
    eventually(
        Duration::from_secs(30),
        "eu's service center restarted with --max-subscriptions 5",
        || {
            let path = state.join("eu/service-center.pid");
            std::fs::read_to_string(path)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .is_some_and(|pid| {
                    pid != first && max_subscriptions_of(pid).as_deref() == Some("5")
                })
        },
    );
    assert!(!alive(first), "the old service center stopped");
    assert_eq!(
        local.pid("eu", "roaming"),
        roaming,
        "the roaming system kept"
    );
    // The restarted one serves.
    let mut registered = None;
    eventually(Duration::from_secs(30), "a registration at eu", || {
        let out = local.cli(&as_user("ann@eu", &["register"]));
        registered = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        out.status.success()
    });
    assert_eq!(registered.unwrap().trim(), "registered ann@eu");
}
