//! Many users and sessions at one region, made as fast as the service center
//! lets them be made, and what the scenarios read of its process.
//!
//! Every registration and every login hashes a password (argon2id, tens of
//! milliseconds of a core), on a pool of half the machine's cores; at most
//! `LOGIN_FAILURES_PER_ADDRESS` (16) logins from one address are in
//! progress at once, and at most 64 hashes wait (node/src/limits.rs). So the
//! calls go out [`CONCURRENCY`] at a time over a few shared connections,
//! each user logs in once per session it needs, and a user holds as many
//! subscriptions as it may ([`PER_USER`]) where one token will do.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use meridian_node::client::Client;
use meridian_node::limits::{LOGIN_FAILURES_PER_ADDRESS, MAX_SUBSCRIPTIONS_PER_USER};
use tonic::Code;

use crate::bench::cpu::{Group, Probe, Source};
use crate::bench::local::Endpoints;
use crate::bench::setup::{Ctx, PASSWORD};

/// Setup calls in flight: the most logins one address may have in progress.
pub const CONCURRENCY: usize = LOGIN_FAILURES_PER_ADDRESS as usize;
/// Subscriptions one user may hold at one service center.
pub const PER_USER: usize = MAX_SUBSCRIPTIONS_PER_USER;

/// `n` users' names at `region`: `<prefix>-<role><i>@<region>`.
pub fn names(ctx: &Ctx, role: &str, region: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{}@{region}", ctx.name(&format!("{role}{i}"))))
        .collect()
}

/// `n` new connections to `region`, not logged in.
pub async fn connections(ctx: &Ctx, region: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        clients.push(ctx.connect(region).await?);
    }
    Ok(clients)
}

/// Retries `call` while the service center is busy (the hashing queue full,
/// a login throttled, a connection refused): 30 attempts at most.
async fn retried<T, F, Fut>(what: String, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut attempt = 0u64;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(s)
                if attempt < 30
                    && matches!(
                        s.code(),
                        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
                    ) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(s) => return Err(anyhow!("{what}: {:?}: {}", s.code(), s.message())),
        }
    }
}

/// Prints `done of total` at every tenth.
struct Progress {
    what: &'static str,
    total: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let step = (self.total / 10).max(1);
        if done.is_multiple_of(step) || done == self.total {
            let seconds = self.started.elapsed().as_secs_f64();
            println!(
                "    {} {done} of {} in {seconds:.1} s ({:.0}/s)",
                self.what,
                self.total,
                done as f64 / seconds.max(1e-9)
            );
        }
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Runs `call(i)` for every `i` below `n`, [`CONCURRENCY`] at a time,
/// printing progress as `what`: what each returned, by `i`, and the seconds
/// it took. The first error ends it.
async fn each<T, F, Fut>(what: &'static str, n: usize, call: F) -> anyhow::Result<(Vec<T>, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let progress = Progress::new(what, n);
    let mut calls = futures::stream::iter(0..n)
        .map(|i| {
            let call = call(i);
            let progress = &progress;
            async move {
                let value = call.await?;
                progress.tick();
                anyhow::Ok((i, value))
            }
        })
        .buffer_unordered(CONCURRENCY);
    let mut values: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
    while let Some(result) = calls.next().await {
        let (i, value) = result?;
        values[i] = Some(value);
    }
    let values = values
        .into_iter()
        .map(|v| v.expect("every call answered"))
        .collect();
    Ok((values, progress.seconds()))
}

/// Registers every user (one already registered counts as done); returns
/// the seconds it took.
pub async fn register(clients: &[Client], users: &[String]) -> anyhow::Result<f64> {
    let (_, seconds) = each("registered", users.len(), |i| {
        let (client, user) = (&clients[i % clients.len()], &users[i]);
        retried(format!("register {user}"), move || {
            let mut client = client.clone();
            async move {
                match client.register(user, PASSWORD).await {
                    Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                    other => other.map(drop),
                }
            }
        })
    })
    .await?;
    Ok(seconds)
}

/// Logs each of `logins` in (a user named twice gets two sessions); the
/// session tokens in the same order, and the seconds it took.
pub async fn login(clients: &[Client], logins: &[String]) -> anyhow::Result<(Vec<String>, f64)> {
    each("logged in", logins.len(), |i| {
        let (client, user) = (&clients[i % clients.len()], &logins[i]);
        let reply = retried(format!("log {user} in"), move || {
            let mut client = client.clone();
            async move { client.login(user, PASSWORD).await }
        });
        async move { Ok(reply.await?.session) }
    })
    .await
}

/// `client` acting with session `token`.
pub fn as_session(client: &Client, token: &str) -> anyhow::Result<Client> {
    let mut client = client.clone();
    client
        .set_session(token)
        .map_err(|s| anyhow!("session token: {}", s.message()))?;
    Ok(client)
}

/// Puts users in groups of at most `size`: the first user of each creates
/// it (`<prefix>-<role><k>`), the others join. The group of each user, by
/// index.
pub async fn groups(
    ctx: &Ctx,
    clients: &[Client],
    tokens: &[String],
    role: &str,
    size: usize,
) -> anyhow::Result<Vec<String>> {
    let size = size.max(1);
    let mut ids = Vec::new();
    for (k, first) in tokens.iter().step_by(size).enumerate() {
        let mut owner = as_session(&clients[k % clients.len()], first)?;
        let name = ctx.name(&format!("{role}{k}"));
        let info = owner
            .create_group(&name)
            .await
            .map_err(|s| anyhow!("create group {name}: {}", s.message()))?;
        ids.push(info.id);
    }
    let joining: Vec<usize> = (0..tokens.len()).filter(|i| i % size != 0).collect();
    each("joined", joining.len(), |k| {
        let i = joining[k];
        let group = &ids[i / size];
        let client = as_session(&clients[i % clients.len()], &tokens[i]);
        async move {
            let client = client?;
            retried(format!("join {group}"), || {
                let mut client = client.clone();
                async move { client.join(group).await }
            })
            .await
        }
    })
    .await?;
    Ok((0..tokens.len()).map(|i| ids[i / size].clone()).collect())
}

/// The pid local mode wrote for one of `region`'s processes
/// (`service-center`, `roaming`).
pub fn pid(endpoints: &Endpoints, region: &str, stem: &str) -> anyhow::Result<u32> {
    pid_in(endpoints.dir(region)?, stem)
}

fn pid_in(dir: &Path, stem: &str) -> anyhow::Result<u32> {
    let file = dir.join(format!("{stem}.pid"));
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("no pid in {}", file.display()))
}

/// A process's resident memory (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A process's resident memory once it has stopped moving: sampled every
/// 500 ms until two samples in a row are within 0.5 % of each other (20 s
/// at most, then the last sample).
pub async fn settled_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let read = || rss_kib(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"));
    let mut last = read()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read()?;
        if now.abs_diff(last) * 200 <= last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// The processes whose CPU the scenarios measure: `region`'s service
/// center, its roaming system, the other regions' processes, and this one.
pub fn probe(endpoints: &Endpoints, region: &str) -> anyhow::Result<Probe> {
    let mut others = Vec::new();
    for (code, dir) in &endpoints.dirs {
        if code == region {
            continue;
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "pid")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                others.push(Source::Pid(pid_in(dir, stem)?));
            }
        }
    }
    Ok(Probe::new(vec![
        Group {
            label: format!("{region} service center"),
            sources: vec![Source::Pid(pid(endpoints, region, "service-center")?)],
        },
        Group {
            label: format!("{region} roaming system"),
            sources: vec![Source::Pid(pid(endpoints, region, "roaming")?)],
        },
        Group {
            label: "the other regions' processes".into(),
            sources: others,
        },
        Group {
            label: "load generator (this process)".into(),
            sources: vec![Source::Myself],
        },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let kib = rss_kib(std::process::id()).expect("VmRSS");
        assert!(kib > 0);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
