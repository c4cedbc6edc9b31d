//! The system under test: `meridian-operator local` as a child process, or an
//! `endpoints.json` of a local mode that is already running.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};

/// How long a stopped operator gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The client API URL of every region, from local mode's `endpoints.json`.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub regions: BTreeMap<String, String>,
    /// The mesh CA that `https://` client URLs are verified with.
    pub ca: Option<PathBuf>,
}

impl Endpoints {
    /// Parses `{"regions": {"eu": {"client": "http://…", …}, …}}`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let regions = value
            .get("regions")
            .and_then(|r| r.as_object())
            .ok_or_else(|| anyhow!("no \"regions\" object"))?;
        let mut out = BTreeMap::new();
        for (code, region) in regions {
            let client = region
                .get("client")
                .and_then(|c| c.as_str())
                .ok_or_else(|| anyhow!("region {code} has no \"client\" URL"))?;
            out.insert(code.clone(), client.to_owned());
        }
        if out.is_empty() {
            bail!("no regions");
        }
        let ca = value.get("ca").and_then(|c| c.as_str()).map(PathBuf::from);
        Ok(Self { regions: out, ca })
    }

    /// The TLS client configuration for the client URLs, if they need one.
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(ca)
            .with_context(|| format!("cannot read the CA {}", ca.display()))?;
        Ok(Some(meridian_node::trust::tls::ca_only_client(&pem)?))
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is malformed", path.display()))
    }

    /// The client URL of `region`.
    pub fn client(&self, region: &str) -> anyhow::Result<&str> {
        self.regions.get(region).map(String::as_str).ok_or_else(|| {
            let known: Vec<&str> = self.regions.keys().map(String::as_str).collect();
            anyhow!(
                "region {region} is not served (regions: {})",
                known.join(", ")
            )
        })
    }
}

/// `meridian-operator local` running as a child process. It is stopped with
/// SIGTERM by [`LocalMode::stop`], or when dropped (on an early error).
pub struct LocalMode {
    child: Option<Child>,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    started: SystemTime,
    _temporary: Option<tempfile::TempDir>,
}

impl LocalMode {
    /// Spawns `operator local -f manifest --state-dir DIR`; a temporary
    /// directory when `state_dir` is `None`. Its output goes to a log file.
    pub fn spawn(
        operator: &Path,
        manifest: &Path,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        if !operator.is_file() {
            bail!(
                "no operator binary at {} (build first: cargo build --release -p meridian-operator -p meridian-node, or pass --operator PATH)",
                operator.display()
            );
        }
        if !manifest.is_file() {
            bail!("no manifest at {}", manifest.display());
        }
        let (state_dir, temporary) = match state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                (dir.to_path_buf(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("meridian-bench-")
                    .tempdir()
                    .context("cannot create a temporary state directory")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let log = state_dir.join("bench-operator.log");
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let started = SystemTime::now();
        let child = Command::new(operator)
            .arg("local")
            .arg("-f")
            .arg(manifest)
            .arg("--state-dir")
            .arg(&state_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", operator.display()))?;
        Ok(Self {
            child: Some(child),
            state_dir,
            log,
            started,
            _temporary: temporary,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until `<state-dir>/endpoints.json` is written by this operator
    /// (not left from an earlier run) and parses.
    pub async fn wait_for_endpoints(&mut self, timeout: Duration) -> anyhow::Result<Endpoints> {
        let path = self.state_dir.join("endpoints.json");
        let deadline = Instant::now() + timeout;
        let mut last_problem = String::from("not written yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the operator exited ({status}) before every region served; does `meridian-operator local` start regions yet?\n{}",
                    self.log_tail()
                );
            }
            let fresh = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|modified| modified >= self.started);
            match fresh {
                Ok(true) => match Endpoints::load(&path) {
                    Ok(endpoints) => return Ok(endpoints),
                    Err(e) => last_problem = format!("{e:#}"),
                },
                Ok(false) => last_problem = "only a stale file from an earlier run".into(),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not appear within {} s ({last_problem})\n{}",
                    path.display(),
                    timeout.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the operator's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// Sends SIGTERM and waits for the operator to exit (killed after a grace period).
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("already stopped"))?;
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        terminate(&child);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                child.kill()?;
                let status = child.wait()?;
                bail!(
                    "the operator did not stop within {} s of SIGTERM and was killed ({status})",
                    STOP_GRACE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalMode {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        terminate(&child);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGTERM through the `kill` command (this workspace forbids unsafe code).
fn terminate(child: &Child) {
    let result = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .status();
    if let Err(e) = result {
        eprintln!("cannot run kill -TERM {}: {e}", child.id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_parsed() {
        let e = Endpoints::parse(
            r#"{"regions": {"eu": {"client": "http://127.0.0.1:1", "peer": "x"}, "us": {"client": "http://127.0.0.1:2"}}}"#,
        )
        .unwrap();
        assert_eq!(e.client("eu").unwrap(), "http://127.0.0.1:1");
        assert_eq!(e.client("us").unwrap(), "http://127.0.0.1:2");
        assert!(e.client("ap").is_err());
        assert!(Endpoints::parse(r#"{"regions": {}}"#).is_err());
        assert!(Endpoints::parse(r#"{"regions": {"eu": {}}}"#).is_err());
    }
}
