//! A real Kubernetes control plane on 127.0.0.1, shared by every test that
//! needs one: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
//! and kwok as a fake kubelet, built from Go modules and started by
//! `tests/control-plane/up` (see the comment at the top of that script).
//!
//! ```no_run
//! use meridian_tests::control_plane::ControlPlane;
//! let cluster = ControlPlane::start().unwrap();
//! let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]).unwrap();
//! assert!(nodes.contains("node/kwok-node-0"));
//! // Dropping `cluster` runs `tests/control-plane/down`.
//! ```
//!
//! Several control planes can run at once (each on its own ports). The first
//! start on a machine builds the binaries, which takes long; later starts
//! reuse the build cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One running control plane. Dropping it stops everything it started.
pub struct ControlPlane {
    /// The directory `up` ran in: `kubeconfig`, `bin/`, `logs/`, `run/`, …
    pub dir: PathBuf,
    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub server: String,
    /// Kept so that the directory outlives the processes.
    _tempdir: Option<tempfile::TempDir>,
    stopped: bool,
}

/// `tests/control-plane`, where `build`, `up` and `down` live.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane")
}

/// Builds the control plane's binaries (or finds them in the cache) and
/// returns their directory. `start` does this too; calling it first makes a
/// long first build visible on its own.
pub fn build() -> anyhow::Result<PathBuf> {
    let output = Command::new(scripts_dir().join("build"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/control-plane/build")?;
    if !output.status.success() {
        bail!("tests/control-plane/build failed with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(bin))
}

impl ControlPlane {
    /// Starts a control plane in a new temporary directory and waits until
    /// it is ready (see `up`).
    pub fn start() -> anyhow::Result<Self> {
        let tempdir = tempfile::Builder::new()
            .prefix("meridian-cp-")
            .tempdir()
            .context("creating the control plane's directory")?;
        let mut cluster = Self::start_in(tempdir.path())?;
        cluster._tempdir = Some(tempdir);
        Ok(cluster)
    }

    /// Starts a control plane in `dir` (created if missing; it must not hold
    /// files of its own under the names `up` writes, see `up`).
    pub fn start_in(dir: &Path) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut cluster = ControlPlane {
            dir: dir.to_path_buf(),
            server: String::new(),
            _tempdir: None,
            stopped: false,
        };
        // A watchdog in `up` runs `down` once this process is gone, so even
        // a test killed outright leaves nothing running.
        let output = Command::new(scripts_dir().join("up"))
            .arg(dir)
            .env("MERIDIAN_CP_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running tests/control-plane/up")?;
        if !output.status.success() {
            cluster.stopped = true; // `up` has already cleaned up after itself
            bail!(
                "tests/control-plane/up {} failed with {} (its output is above; logs in {})",
                dir.display(),
                output.status,
                dir.join("logs").display()
            );
        }
        let ports =
            std::fs::read_to_string(dir.join("run/ports.env")).context("reading run/ports.env")?;
        let port = ports
            .lines()
            .find_map(|line| line.strip_prefix("APISERVER_PORT="))
            .context("APISERVER_PORT missing from run/ports.env")?;
        cluster.server = format!("https://127.0.0.1:{port}");
        eprintln!(
            "control plane in {} ready in {:.1} s at {}",
            dir.display(),
            started.elapsed().as_secs_f64(),
            cluster.server
        );
        Ok(cluster)
    }

    /// The admin kubeconfig (group `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Holds `kubectl` and `helm`.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The CA certificate that signed the apiserver's serving certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// One log file per process: `etcd.log`, `kube-apiserver.log`, …
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A `kubectl` command against this control plane as admin, ready for
    /// more arguments, environment or stdin.
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new(self.bin_dir().join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            // Its own discovery cache: ports are reused by later clusters.
            .arg("--cache-dir")
            .arg(self.dir.join("run/kube-cache"))
            .stdin(Stdio::null());
        command
    }

    /// Runs `kubectl ARGS` as admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command()
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Runs `kubectl ARGS` as admin and returns its stdout, or an error with
    /// its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        checked("kubectl", args, self.kubectl(args))
    }

    /// Waits (up to a minute each) until every CRD named in `crds` is
    /// established.
    pub fn wait_crds_established(&self, crds: &[&str]) -> anyhow::Result<()> {
        for crd in crds {
            self.kubectl_ok(&[
                "wait",
                "--for",
                "condition=Established",
                &format!("crd/{crd}"),
                "--timeout",
                "60s",
            ])?;
        }
        Ok(())
    }

    /// Runs `kubectl ARGS` with `stdin` as its standard input, e.g.
    /// `kubectl_stdin(&["apply", "-f", "-"], yaml)`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(stdin.as_bytes())
            .context("writing to kubectl")?;
        let output = child.wait_with_output().context("waiting for kubectl")?;
        checked("kubectl", args, output)
    }

    /// A `helm` command against this control plane as admin, with helm's
    /// cache, config and data kept inside this control plane's directory.
    pub fn helm_command(&self) -> Command {
        let home = self.dir.join("run/helm");
        let mut command = Command::new(self.bin_dir().join("helm"));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        command
    }

    /// Runs `helm ARGS` as admin.
    pub fn helm(&self, args: &[&str]) -> Output {
        self.helm_command()
            .args(args)
            .output()
            .expect("running helm")
    }

    /// Runs `helm ARGS` and returns its stdout, or an error with its stderr.
    pub fn helm_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        checked("helm", args, self.helm(args))
    }

    /// Writes a kubeconfig that authenticates with a bearer `token` (e.g. from
    /// `kubectl create token SERVICEACCOUNT`) and returns its path.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("run").join(format!("{name}.kubeconfig"));
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "meridian", "cluster": {
                "server": self.server,
                "certificate-authority": self.ca_cert(),
            }}],
            "users": [{"name": name, "user": {"token": token.trim()}}],
            "contexts": [{"name": "meridian", "context": {"cluster": "meridian", "user": name}}],
            "current-context": "meridian",
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Polls `check` every 200 ms until it returns true; fails after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if check() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops everything `up` started and removes its files (`down`).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let output = Command::new(scripts_dir().join("down"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .context("running tests/control-plane/down")?;
        checked("down", &[], output).map(drop)
    }

    /// The last `lines` lines of every component's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut report = String::new();
        let Ok(entries) = std::fs::read_dir(self.log_dir()) else {
            return report;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            report.push_str(&format!("---- {}\n", path.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                report.push_str(line);
                report.push('\n');
            }
        }
        report
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "control plane in {}: last log lines\n{}",
                self.dir.display(),
                self.log_tails(20)
            );
        }
        if let Err(error) = self.stop() {
            eprintln!(
                "stopping the control plane in {}: {error:#}",
                self.dir.display()
            );
        }
    }
}

fn checked(program: &str, args: &[&str], output: Output) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{program} {} failed with {}: {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        );
    }
    Ok(stdout)
}
