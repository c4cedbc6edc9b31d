//! `drill`: the load and the proof of the kind suite's drills (tests/kind/run).
//!
//! - `drill load` sends to one group at a steady rate until a stop file
//!   appears. Every message has its own idempotency key; a send that fails
//!   (the pod is being replaced, the link is cut) is retried with the same key
//!   until it is acknowledged, so a retry can never make a second message.
//!   Each acknowledgement is appended to `--acked` as `key id`.
//! - `drill check` reads the group's whole history and proves what the
//!   drills promise: seqs run 1..n with no gap, no message appears twice,
//!   every acknowledged id is there, and no key was acknowledged with two ids.
//!
//! The password is read from `MERIDIAN_PASSWORD`, as the CLI does.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use meridian_node::client::Client;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(name = "drill")]
struct Args {
    /// The service center's client API, `http://host:port`.
    #[arg(long)]
    server: String,
    /// The user, `name@region`; registered already.
    #[arg(long)]
    user: String,
    /// The group, `name@region`; the user is a member.
    #[arg(long)]
    group: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send at a steady rate until the stop file exists.
    Load {
        /// Messages per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Idempotency keys and bodies start with this.
        #[arg(long)]
        prefix: String,
        /// Appends `key id` for every acknowledged send.
        #[arg(long)]
        acked: PathBuf,
        /// Stops sending new messages once this file exists.
        #[arg(long)]
        stop: PathBuf,
        /// Sends in flight at most.
        #[arg(long, default_value_t = 64)]
        max_in_flight: usize,
        /// Gives up on a message after retrying it this long.
        #[arg(long, default_value_t = 300)]
        retry_seconds: u64,
    },
    /// Prove the group's history against the acknowledgements.
    Check {
        /// Files written by `drill load` (or `key id` lines from elsewhere).
        #[arg(long, required = true)]
        acked: Vec<PathBuf>,
    },
}

const PAGE: u32 = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match &args.command {
        Command::Load {
            rate,
            prefix,
            acked,
            stop,
            max_in_flight,
            retry_seconds,
        } => {
            let load = Load {
                rate: *rate,
                prefix: prefix.clone(),
                stop: stop.clone(),
                max_in_flight: *max_in_flight,
                retry: Duration::from_secs(*retry_seconds),
            };
            load.run(&args, acked).await
        }
        Command::Check { acked } => check(&args, acked).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drill: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn password() -> anyhow::Result<String> {
    std::env::var("MERIDIAN_PASSWORD").context("MERIDIAN_PASSWORD is not set")
}

/// A logged-in client, connected again after any failure.
struct Session {
    server: String,
    user: String,
    password: String,
    client: Option<Client>,
}

impl Session {
    async fn client(&mut self) -> anyhow::Result<Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let mut client = Client::connect(&self.server, None).await?;
        let login = client.login(&self.user, &self.password).await?;
        client.set_session(&login.session)?;
        self.client = Some(client.clone());
        Ok(client)
    }

    fn reset(&mut self) {
        self.client = None;
    }
}

struct Load {
    rate: f64,
    prefix: String,
    stop: PathBuf,
    max_in_flight: usize,
    retry: Duration,
}

impl Load {
    async fn run(&self, args: &Args, acked: &Path) -> anyhow::Result<()> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
        let session = Arc::new(Mutex::new(Session {
            server: args.server.clone(),
            user: args.user.clone(),
            password: password()?,
            client: None,
        }));
        let out = Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(acked)
                .with_context(|| format!("cannot open {}", acked.display()))?,
        ));
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_in_flight));
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut n: u64 = 0;
        while !self.stop.exists() {
            n += 1;
            tokio::time::sleep_until((start + interval.mul_f64(n as f64)).into()).await;
            let permit = slots.clone().acquire_owned().await?;
            let key = format!("{}-{n}", self.prefix);
            let (session, out, group, retry) =
                (session.clone(), out.clone(), args.group.clone(), self.retry);
            tasks.spawn(async move {
                let _permit = permit;
                let id = send_until_acked(&session, &group, &key, retry).await?;
                let mut out = out.lock().expect("acked file lock");
                writeln!(out, "{key} {id}")?;
                anyhow::Ok(())
            });
        }
        let mut failed = 0;
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result? {
                eprintln!("drill: {e:#}");
                failed += 1;
            }
        }
        eprintln!("drill: {} sends, {failed} gave up", n);
        if failed > 0 {
            bail!("{failed} sends were never acknowledged");
        }
        Ok(())
    }
}

/// Sends `key` until a reply acknowledges it, reconnecting after failures.
async fn send_until_acked(
    session: &Mutex<Session>,
    group: &str,
    key: &str,
    retry: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + retry;
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut client = session.lock().await.client().await?;
            anyhow::Ok(client.send(group, key, key).await?)
        };
        match attempt.await {
            Ok(reply) => return Ok(reply.message_id),
            Err(e) if Instant::now() < deadline => {
                if is_refusal(&e) {
                    bail!("send {key} refused: {e:#}");
                }
                session.lock().await.reset();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => bail!("send {key} not acknowledged within {retry:?}: {e:#}"),
        }
    }
}

/// A verdict rather than a failure to reach the service center.
fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>().is_some_and(|s| {
        matches!(
            s.code(),
            tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::NotFound
        )
    })
}

async fn check(args: &Args, acked: &[PathBuf]) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    for path in acked {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        acks.extend(parse_acked(&text).with_context(|| path.display().to_string())?);
    }
    let mut session = Session {
        server: args.server.clone(),
        user: args.user.clone(),
        password: password()?,
        client: None,
    };
    let mut client = session.client().await?;
    let mut history = Vec::new();
    loop {
        let after = history.last().map_or(0, |(seq, _)| *seq);
        let page = client.history(&args.group, after, PAGE).await?;
        let full = page.len() == PAGE as usize;
        history.extend(page.into_iter().map(|d| (d.seq, d.message_id)));
        if !full {
            break;
        }
    }
    let summary = verify(&history, &acks)?;
    println!(
        "{}: {} messages, seq 1..{}, no gap, no duplicate; all {} acknowledged ids present",
        args.group, summary.messages, summary.messages, summary.acked
    );
    Ok(())
}

/// `key id` lines.
fn parse_acked(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [key, id] => Ok((key.to_owned(), id.to_owned())),
                _ => bail!("not a `key id` line: {line:?}"),
            },
        )
        .collect()
}

#[derive(Debug, PartialEq)]
struct Summary {
    messages: usize,
    acked: usize,
}

/// The drills' promise, over a history (`seq id`, in order) and the
/// acknowledged `key id` pairs.
fn verify(history: &[(u64, String)], acks: &[(String, String)]) -> anyhow::Result<Summary> {
    let mut seen = HashSet::new();
    for (i, (seq, id)) in history.iter().enumerate() {
        if *seq != i as u64 + 1 {
            bail!(
                "the history's seq {} is at position {}: a gap or a reorder",
                seq,
                i + 1
            );
        }
        if !seen.insert(id.as_str()) {
            bail!("message {id} appears twice in the history");
        }
    }
    let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, id) in acks {
        if let Some(other) = by_key.insert(key, id)
            && other != id
        {
            bail!("key {key} was acknowledged as both {other} and {id}");
        }
        if !seen.contains(id.as_str()) {
            bail!("acknowledged message {id} (key {key}) is not in the history");
        }
    }
    Ok(Summary {
        messages: history.len(),
        acked: by_key.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(items: &[(u64, &str)]) -> Vec<(u64, String)> {
        items.iter().map(|(s, id)| (*s, id.to_string())).collect()
    }

    fn a(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, id)| (k.to_string(), id.to_string()))
            .collect()
    }

    #[test]
    fn a_complete_history_passes() {
        let summary = verify(
            &h(&[(1, "m1"), (2, "m2"), (3, "m3")]),
            &a(&[("k1", "m1"), ("k3", "m3"), ("k3", "m3")]),
        )
        .unwrap();
        assert_eq!(
            summary,
            Summary {
                messages: 3,
                acked: 2
            }
        );
    }

    #[test]
    fn gaps_duplicates_losses_and_split_keys_fail() {
        let gap = verify(&h(&[(1, "m1"), (3, "m3")]), &[]).unwrap_err();
        assert!(gap.to_string().contains("gap"), "{gap}");
        let twice = verify(&h(&[(1, "m1"), (2, "m1")]), &[]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let lost = verify(&h(&[(1, "m1")]), &a(&[("k2", "m2")])).unwrap_err();
        assert!(lost.to_string().contains("not in the history"), "{lost}");
        let split =
            verify(&h(&[(1, "m1"), (2, "m2")]), &a(&[("k", "m1"), ("k", "m2")])).unwrap_err();
        assert!(split.to_string().contains("both"), "{split}");
    }

    #[test]
    fn acked_lines_parse_or_name_the_bad_line() {
        assert_eq!(parse_acked("k1 m1\n\nk2 m2\n").unwrap().len(), 2);
        let bad = parse_acked("k1 m1 extra\n").unwrap_err();
        assert!(bad.to_string().contains("extra"), "{bad}");
    }
}
