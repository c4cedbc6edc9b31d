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
    /// Every service-center replica's client URL per region, the one in
    /// `regions` first (docs/ARCHITECTURE.md §12, "Reaching the replicas").
    pub replicas: BTreeMap<String, Vec<String>>,
    /// Each region's directory (its pid files and logs), when listed.
    pub dirs: BTreeMap<String, PathBuf>,
    /// The mesh CA that `https://` client URLs are verified with.
    pub ca: Option<PathBuf>,
}

impl Endpoints {
    /// Parses `{"regions": {"eu": {"client": "http://…", "clients": […],
    /// "dir": "…", …}, …}}`; `clients` and `dir` may be missing.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let regions = value
            .get("regions")
            .and_then(|r| r.as_object())
            .ok_or_else(|| anyhow!("no \"regions\" object"))?;
        let mut out = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for (code, region) in regions {
            let client = region
                .get("client")
                .and_then(|c| c.as_str())
                .ok_or_else(|| anyhow!("region {code} has no \"client\" URL"))?;
            out.insert(code.clone(), client.to_owned());
            let mut urls: Vec<String> = match region.get("clients") {
                None => Vec::new(),
                Some(list) => list
                    .as_array()
                    .and_then(|a| a.iter().map(|u| u.as_str().map(str::to_owned)).collect())
                    .ok_or_else(|| anyhow!("region {code}: \"clients\" is not a list of URLs"))?,
            };
            if !urls.iter().any(|u| u == client) {
                urls.insert(0, client.to_owned());
            }
            replicas.insert(code.clone(), urls);
            if let Some(dir) = region.get("dir").and_then(|d| d.as_str()) {
                dirs.insert(code.clone(), PathBuf::from(dir));
            }
        }
        if out.is_empty() {
            bail!("no regions");
        }
        let ca = value.get("ca").and_then(|c| c.as_str()).map(PathBuf::from);
        Ok(Self {
            regions: out,
            replicas,
            dirs,
            ca,
        })
    }

    /// Every replica's client URL of `region`, the one of
    /// [`Endpoints::client`] first.
    pub fn clients(&self, region: &str) -> anyhow::Result<&[String]> {
        self.client(region)?;
        Ok(self
            .replicas
            .get(region)
            .map(Vec::as_slice)
            .unwrap_or_default())
    }

    /// The directory local mode keeps `region`'s pid files in.
    pub fn dir(&self, region: &str) -> anyhow::Result<&Path> {
        self.client(region)?;
        self.dirs
            .get(region)
            .map(PathBuf::as_path)
            .ok_or_else(|| anyhow!("endpoints.json gives no \"dir\" for region {region}"))
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

/// Spawns local mode (see [`LocalMode::spawn_with_env`]) and waits until every
/// region serves; on an error the operator is stopped.
pub async fn start(
    operator: &Path,
    manifest: &Path,
    state_dir: Option<&Path>,
    extra: &[String],
    timeout: Duration,
) -> anyhow::Result<(Endpoints, LocalMode)> {
    start_with_env(operator, manifest, state_dir, extra, &[], timeout).await
}

/// As [`start`], with `env` set for the operator, so for every node process
/// it starts: their flags' variables, such as `MERIDIAN_MAX_SUBSCRIPTIONS`.
pub async fn start_with_env(
    operator: &Path,
    manifest: &Path,
    state_dir: Option<&Path>,
    extra: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> anyhow::Result<(Endpoints, LocalMode)> {
    let mut local = LocalMode::spawn_with_env(operator, manifest, state_dir, extra, env)?;
    println!(
        "started {}{} local -f {} --state-dir {}{}{} (pid {}); waiting for endpoints.json",
        env.iter()
            .map(|(k, v)| format!("{k}={v} "))
            .collect::<String>(),
        operator.display(),
        manifest.display(),
        local.state_dir.display(),
        if extra.is_empty() { "" } else { " " },
        // The connection string holds a password: only its region is shown.
        extra
            .iter()
            .map(|a| match a.split_once("=postgres") {
                Some((region, _)) => format!("{region}=<url>"),
                None => a.clone(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        local.pid().unwrap_or_default()
    );
    let endpoints = local.wait_for_endpoints(timeout).await?;
    Ok((endpoints, local))
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
    /// Spawns `operator local -f manifest --state-dir DIR [extra…]`; a
    /// temporary directory when `state_dir` is `None`. Its output goes to a
    /// log file. `env` is set for the operator, and so for the node
    /// processes it starts, which inherit it.
    pub fn spawn_with_env(
        operator: &Path,
        manifest: &Path,
        state_dir: Option<&Path>,
        extra: &[String],
        env: &[(String, String)],
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
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
        assert_eq!(e.clients("us").unwrap(), ["http://127.0.0.1:2"]);
        assert!(e.client("ap").is_err());
        assert!(e.dir("eu").is_err(), "no dir listed");
        assert!(Endpoints::parse(r#"{"regions": {}}"#).is_err());
        assert!(Endpoints::parse(r#"{"regions": {"eu": {}}}"#).is_err());
    }

    #[test]
    fn every_replica_is_listed_the_first_first() {
        let e = Endpoints::parse(
            r#"{"regions": {"eu": {"client": "https://127.0.0.1:1", "clients": ["https://127.0.0.1:1", "https://127.0.0.1:3"], "dir": "/s/eu"}}}"#,
        )
        .unwrap();
        assert_eq!(
            e.clients("eu").unwrap(),
            ["https://127.0.0.1:1", "https://127.0.0.1:3"]
        );
        assert_eq!(e.dir("eu").unwrap(), Path::new("/s/eu"));
        let bad = Endpoints::parse(
            r#"{"regions": {"eu": {"client": "https://127.0.0.1:1", "clients": "x"}}}"#,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("\"clients\""), "{bad}");
    }
}
