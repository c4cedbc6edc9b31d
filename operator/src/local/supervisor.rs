//! Runs one node process and keeps it running: a process that exits on its
//! own is restarted with backoff; on stop it gets SIGTERM, then SIGKILL if
//! it lingers. Its output goes to a log file and its pid to a pid file, so a
//! person (or a fault-injection test) can find it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A process that ran this long before exiting is restarted without delay.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct ProcessSpec {
    /// For logs, e.g. `eu service center`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

/// Starts supervising `spec` until `stop` turns true.
pub fn supervise(spec: ProcessSpec, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if stopping(&stop) {
                return;
            }
            let mut child = match start(&spec) {
                Ok(child) => child,
                Err(err) => {
                    tracing::error!(process = %spec.name, %err, "cannot start; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let pid = child.id().unwrap_or_default();
            let _ = std::fs::write(&spec.pid_file, format!("{pid}\n"));
            let started = tokio::time::Instant::now();
            tokio::select! {
                status = child.wait() => {
                    if stopping(&stop) {
                        return;
                    }
                    if started.elapsed() >= HEALTHY_RUN {
                        backoff = FIRST_BACKOFF;
                    }
                    tracing::warn!(process = %spec.name, pid, status = ?status.ok(), log = %spec.log.display(),
                        "exited; restarting in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                () = stopped(&mut stop) => {
                    terminate(&spec.name, &mut child, pid).await;
                    let _ = std::fs::remove_file(&spec.pid_file);
                    return;
                }
            }
        }
    })
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

fn start(spec: &ProcessSpec) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    tracing::info!(process = %spec.name, pid = child.id().unwrap_or_default(), log = %spec.log.display(), "started");
    Ok(child)
}

async fn terminate(name: &str, child: &mut tokio::process::Child, pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(_) => tracing::info!(process = %name, pid, "stopped"),
        Err(_) => {
            tracing::warn!(process = %name, pid, "did not stop in time; killing");
            let _ = child.kill().await;
        }
    }
}
