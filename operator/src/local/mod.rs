//! Local mode: runs the regions of Region and RegionLink manifests as
//! processes on this machine — per region a service center and a roaming
//! system on 127.0.0.1, wired as a full mesh — and keeps them in step with
//! the manifest files until Ctrl-C or SIGTERM.

mod ports;
mod readiness;
mod regions;
mod supervisor;

use std::path::{Path, PathBuf};

use anyhow::Context;

use regions::LocalMesh;

/// Arguments of `meridian-operator local`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// A manifest file of Region and RegionLink objects; repeat for several files.
    #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Directory for each region's data, configuration and logs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,

    /// How long the certificates local mode issues live; each is renewed
    /// once it has used a third of its life.
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 60 * 60, value_parser = clap::value_parser!(u64).range(3..))]
    pub cert_lifetime: u64,

    /// The meridian-node binary (default: next to this binary).
    #[arg(long, env = "MERIDIAN_NODE_BINARY", value_name = "PATH")]
    pub node_binary: Option<PathBuf>,
}

/// How often the manifest files are checked for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the regions the manifests define until Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let manifests = meridian_crds::manifest::load_files(&args.files)?;
    std::fs::create_dir_all(&args.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            args.state_dir.display()
        )
    })?;
    let state_dir = args.state_dir.canonicalize()?;
    let node_binary = match args.node_binary {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("meridian-node"),
    };
    anyhow::ensure!(
        node_binary.is_file(),
        "meridian-node not found at {} (build it, or pass --node-binary)",
        node_binary.display()
    );
    let _lock = StateLock::take(&state_dir)?;

    let lifetime = std::time::Duration::from_secs(args.cert_lifetime);
    let mut mesh = LocalMesh::new(state_dir.clone(), node_binary, lifetime)?;
    mesh.reconcile(&manifests)?;
    let ready = tokio::select! {
        ready = mesh.wait_ready() => Some(ready),
        () = stop_signal() => None,
    };
    let mut stopped = ready.is_none();
    if let Some(ready) = ready {
        ready?;
        mesh.write_endpoints()?;
        tracing::info!(
            regions = mesh.region_count(),
            endpoints = %state_dir.join("endpoints.json").display(),
            "every region serves; Ctrl-C stops them"
        );
    }

    let mut last_texts = read_all(&args.files);
    let mut signal = std::pin::pin!(stop_signal());
    while !stopped {
        tokio::select! {
            () = &mut signal => stopped = true,
            () = tokio::time::sleep(WATCH_INTERVAL) => {
                if let Err(err) = mesh.renew() {
                    tracing::error!("renewing certificates: {err:#}");
                }
                let texts = read_all(&args.files);
                if texts == last_texts {
                    continue;
                }
                last_texts = texts;
                match meridian_crds::manifest::load_files(&args.files) {
                    Ok(manifests) => {
                        tracing::info!("manifests changed; applying");
                        if let Err(err) = mesh.reconcile(&manifests) {
                            tracing::error!("{err:#}");
                        } else if let Err(err) = mesh.write_endpoints() {
                            tracing::error!("{err:#}");
                        }
                    }
                    Err(err) => tracing::error!("manifests changed but are invalid; keeping the running mesh:\n{err}"),
                }
            }
        }
    }
    tracing::info!("stopping every region");
    mesh.stop().await;
    let _ = std::fs::remove_file(state_dir.join("endpoints.json"));
    Ok(())
}

fn read_all(files: &[PathBuf]) -> Vec<Option<String>> {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).ok())
        .collect()
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Writes a file so that readers see the old or the new content, never half.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// One local mode per state directory.
struct StateLock(PathBuf);

impl StateLock {
    fn take(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("local.pid");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid != std::process::id() as i32
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        {
            anyhow::bail!(
                "another local mode (pid {pid}) is using {}",
                state_dir.display()
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(Self(path))
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
