//! The bound on live subscriptions a service center holds is its operator's
//! to set (`meridian-node --max-subscriptions`, or `MERIDIAN_MAX_SUBSCRIPTIONS`):
//! a real node process holds exactly that many, refuses one more with
//! RESOURCE_EXHAUSTED whoever asks, and takes one again once one ends. A
//! value that is no bound is refused at start, naming the flag.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_node::client::Client;
use meridian_tests::node_process::{self, Node, Region, free_addr};

/// The arguments of one process running both roles of region eu, with its
/// identity written to `dir`; the client API at `client`.
fn both_roles(dir: &Path, client: SocketAddr) -> Vec<String> {
    let region = Region::new(dir, "cap");
    let mut args = region.args("both");
    args.extend(region.service_center_args(&dir.join("data"), client));
    args.extend(region.roaming_args(free_addr()));
    args
}

/// `meridian-node` with `args`, and no bound on subscriptions from the
/// environment but those of `env`.
fn capped(args: &[String], env: &[(&str, &str)]) -> Command {
    let mut command = node_process::command(args);
    command
        .env_remove("MERIDIAN_MAX_SUBSCRIPTIONS")
        .envs(env.iter().copied());
    command
}

/// Registers `user` and logs it in, retrying while the node starts (30 s at
/// most).
async fn logged_in(node: &Node, url: &str, user: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let mut client = Client::connect(url, None)
                .await
                .map_err(|e| e.to_string())?;
            match client.register(user, "cap-password").await {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                Err(s) => return Err(s.to_string()),
            }
            client
                .login(user, "cap-password")
                .await
                .map_err(|s| s.to_string())?;
            Ok::<_, String>(client)
        };
        match attempt.await {
            Ok(client) => return client,
            Err(e) => assert!(
                Instant::now() < deadline,
                "{user} cannot log in at {url}: {e}\n{}",
                node.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_center_holds_the_subscriptions_its_operator_set_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let client = free_addr();
    let mut args = both_roles(dir.path(), client);
    args.extend(["--max-subscriptions".into(), "3".into()]);
    let node = Node::start(dir.path(), "node", &mut capped(&args, &[]));
    let url = format!("http://{client}");
    let mut ann = logged_in(&node, &url, "ann@eu").await;
    let mut bob = logged_in(&node, &url, "bob@eu").await;

    let mut held = Vec::new();
    for i in 0..3 {
        let stream = ann.subscribe(Vec::new()).await.unwrap_or_else(|s| {
            panic!(
                "subscription {i} of 3 was refused: {s}\n{}",
                node.log_text()
            )
        });
        held.push(stream);
    }
    // The fourth is refused, for ann (who may hold 16) and for anyone else.
    for (who, client) in [("ann", &mut ann), ("bob", &mut bob)] {
        let refused = client
            .subscribe(Vec::new())
            .await
            .expect_err("a fourth subscription was accepted");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{who}");
        assert!(
            refused
                .message()
                .contains("this service center holds 3 subscriptions"),
            "{who}: {}",
            refused.message()
        );
    }
    // Once one ends, its place is free again (the server learns of the end
    // when the stream's connection says so: wait for it, with a deadline).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bob.subscribe(Vec::new()).await {
            Ok(stream) => {
                held.push(stream);
                break;
            }
            Err(s) if s.code() == tonic::Code::ResourceExhausted => assert!(
                Instant::now() < deadline,
                "still refused 10 s after a subscription ended: {s}"
            ),
            Err(s) => panic!("unexpected refusal: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bound_that_is_no_number_of_subscriptions_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let args = both_roles(dir.path(), free_addr());
    for (how, bad) in [("flag", "0"), ("flag", "many"), ("env", "0")] {
        let mut args = args.clone();
        let env: Vec<(&str, &str)> = match how {
            "flag" => {
                args.extend(["--max-subscriptions".into(), bad.into()]);
                Vec::new()
            }
            _ => vec![("MERIDIAN_MAX_SUBSCRIPTIONS", bad)],
        };
        let output = capped(&args, &env).output().expect("run meridian-node");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{how} {bad}: it started");
        assert!(
            stderr.contains("--max-subscriptions") && stderr.contains("at least 1"),
            "{how} {bad}: {stderr}"
        );
    }
}
