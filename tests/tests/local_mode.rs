//! Local mode on the example manifests, driven by the `meridian` CLI: a chat
//! between users of three regions through real processes.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use meridian_tests::local_mode::{LocalMode, alive, as_user, ok, signal, workspace_root};
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

    let lines: Vec<Value> = BufReader::new(listener.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(listener.wait().unwrap().success());
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(lines[0]["id"], first.trim());
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
