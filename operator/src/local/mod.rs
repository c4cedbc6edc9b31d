//! Local mode: runs the regions of Region and RegionLink manifests as
//! processes on this machine — per region a service center and a roaming
//! system on 127.0.0.1, wired as a full mesh — and keeps them in step with
//! the manifest files until Ctrl-C or SIGTERM.

mod links;
mod memory;
mod ports;
mod postgres;
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

    /// The memory the regions may take together, as a quantity (`8Gi`).
    /// Default: 90% of what the machine has available (MemAvailable).
    /// Local mode starts one region, measures it, and refuses to start the
    /// rest when they would not fit.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,

    /// Run REGION's data center on the PostgreSQL database at URL (a
    /// connection string) instead of SQLite; the region then runs as many
    /// service-center replicas as its `spec.serviceCenter.replicas`.
    /// `REGION=@FILE` reads the string from FILE (one line; a trailing
    /// line end is dropped), which keeps its password out of `ps`. Local
    /// mode keeps the string in a file only its owner can read,
    /// `DIR/<region>/postgres-url`. Repeat for several regions.
    #[arg(long = "postgres", value_name = "REGION=URL|REGION=@FILE", value_parser = postgres::parse_arg)]
    pub postgres: Vec<postgres::PostgresArg>,

    /// The PEM CA certificates of REGION's PostgreSQL server (given
    /// `--postgres`): each of its service-center replicas then requires
    /// TLS and checks the server's certificate and name against them
    /// (`meridian-node --postgres-ca-file`). A relative FILE is taken from
    /// the current directory. Repeat for several regions.
    #[arg(long = "postgres-ca", value_name = "REGION=FILE", value_parser = postgres::parse_ca_arg)]
    pub postgres_ca: Vec<postgres::CaArg>,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let amount = meridian_crds::quantity::parse(text).map_err(|e| e.to_string())?;
    u64::try_from(amount.units()).map_err(|_| format!("{text:?} is too large"))
}

/// How often the manifest files are checked for changes.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the regions the manifests define until Ctrl-C or SIGTERM.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    // First of all, so that a stop at any point of the startup is seen, and
    // every process started by then is stopped before local mode exits.
    let mut signal = std::pin::pin!(stop_signal()?);
    let databases = postgres::Databases::new(args.postgres, args.postgres_ca)?;
    let manifests = databases.load(&args.files)?;
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
    let mut mesh = LocalMesh::new(state_dir.clone(), node_binary, lifetime, databases.clone())?;
    let budget = match args.memory_budget {
        Some(bytes) => memory::Budget::Given(bytes),
        None => memory::Budget::Available(memory::available()?),
    };
    let started = tokio::select! {
        started = start(&mut mesh, &manifests, budget) => Some(started),
        () = &mut signal => None,
    };
    let mut stopped = started.is_none();
    let mut measured = None;
    match started {
        None => tracing::info!("stopped during the startup"),
        Some(Err(err)) => {
            tracing::info!("stopping the regions started so far");
            mesh.stop().await;
            return Err(err);
        }
        Some(Ok(first)) => {
            measured = first;
            mesh.write_endpoints()?;
            tracing::info!(
                regions = mesh.region_count(),
                endpoints = %state_dir.join("endpoints.json").display(),
                "every region serves; Ctrl-C stops them"
            );
        }
    }

    let mut last_texts = read_all(&args.files);
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
                match databases.load(&args.files) {
                    Ok(manifests) => {
                        tracing::info!("manifests changed; applying");
                        if let Err(err) = fits(&mesh, &manifests, measured.as_ref(), args.memory_budget) {
                            tracing::error!("{err:#}; keeping the running mesh");
                        } else if let Err(err) = mesh.reconcile(&manifests) {
                            tracing::error!("{err:#}");
                        } else if let Err(err) = mesh.write_endpoints() {
                            tracing::error!("{err:#}");
                        }
                    }
                    Err(err) => tracing::error!("manifests changed but are invalid; keeping the running mesh:\n{err:#}"),
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

/// Starts the regions: one first, which is measured once it serves; then,
/// if the rest fit in `budget`, all of them. Returns once every region
/// serves and their links are Up (or, past [`links::DEADLINE`], with a
/// warning naming those that are not), with what the first one was
/// measured to take.
async fn start(
    mesh: &mut LocalMesh,
    manifests: &meridian_crds::manifest::Manifests,
    budget: memory::Budget,
) -> anyhow::Result<Option<memory::Measured>> {
    mesh.reconcile_some(manifests, 1)?;
    mesh.wait_ready().await?;
    let total = manifests.regions.len();
    let mut first_measured = None;
    if let Some(first) = mesh.running().next().map(str::to_owned)
        && total > 1
    {
        let pids = mesh
            .pids(&first)
            .with_context(|| format!("region {first}'s pid files are missing"))?;
        let mut resident = 0;
        for pid in pids {
            resident += memory::resident(pid)?;
        }
        let measured = memory::Measured {
            region: first,
            resident,
        };
        tracing::info!(
            region = %measured.region, resident_bytes = measured.resident,
            per_region_bytes = measured.per_region(), regions = total,
            "measured the first region; checking the rest fit"
        );
        memory::check(&measured, measured.resident, total - 1, total, budget)?;
        first_measured = Some(measured);
    }
    mesh.reconcile(manifests)?;
    mesh.wait_ready().await?;
    let started = std::time::Instant::now();
    let not_up = mesh.wait_linked(links::DEADLINE).await;
    if not_up.is_empty() {
        tracing::info!(waited = ?started.elapsed(), "every link between the regions is up");
    } else {
        // Serving on: each region serves its own users whatever its links
        // do, and a link that comes up later is used at once.
        let list: Vec<String> = not_up.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "{} link(s) not up after {:?}: {}; serving anyway (each region serves its own \
             users; calls to an unreachable region fail until its link comes up). \
             `meridian mesh status --region CODE` shows a region's links; its roaming.log \
             says why",
            not_up.len(),
            links::DEADLINE,
            list.join(", ")
        );
    }
    Ok(first_measured)
}

/// Whether the regions that changed manifests add fit in memory, planning
/// each (running or new) at the first region's measured figure.
fn fits(
    mesh: &LocalMesh,
    manifests: &meridian_crds::manifest::Manifests,
    measured: Option<&memory::Measured>,
    memory_budget: Option<u64>,
) -> anyhow::Result<()> {
    let running = mesh.region_count();
    let total = manifests.regions.len();
    let (Some(measured), true) = (measured, total > running) else {
        return Ok(());
    };
    let budget = match memory_budget {
        Some(bytes) => memory::Budget::Given(bytes),
        None => memory::Budget::Available(memory::available()?),
    };
    let in_use = measured.per_region().saturating_mul(running as u64);
    memory::check(measured, in_use, total - running, total, budget)
}

/// A future that completes on Ctrl-C or SIGTERM. The handlers are in place
/// when this returns (not when the future is first polled), so a signal
/// that arrives in between is not lost, nor does it kill the process.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    })
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
