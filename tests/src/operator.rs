//! `meridian-operator run` as a process against a control plane, as the
//! Helm chart's ServiceAccount, for the operator tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::control_plane::ControlPlane;
use crate::local_mode::{binary, signal, workspace_root};

/// The Helm release the tests install, and so the chart's ServiceAccount.
pub const RELEASE: &str = "meridian";
pub const RELEASE_NAMESPACE: &str = "meridian-system";
pub const SERVICE_ACCOUNT: &str = "meridian-operator";

/// Installs the chart with real helm.
pub fn helm_install(cluster: &ControlPlane, cluster_name: &str) -> anyhow::Result<String> {
    let chart = workspace_root().join("charts/meridian");
    cluster.helm_ok(&[
        "install",
        RELEASE,
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        &format!("cluster={cluster_name}"),
    ])
}

/// Meridian's CRDs, as the chart installs them.
pub const MERIDIAN_CRDS: [&str; 2] = ["regions.meridian.dev", "regionlinks.meridian.dev"];

/// Installs the chart and waits until its CRDs are established.
pub fn install_and_wait(cluster: &ControlPlane, cluster_name: &str) -> anyhow::Result<()> {
    helm_install(cluster, cluster_name)?;
    cluster.wait_crds_established(&MERIDIAN_CRDS)
}

/// A kubeconfig holding a token of the chart's ServiceAccount.
pub fn service_account_kubeconfig(cluster: &ControlPlane) -> anyhow::Result<PathBuf> {
    let token = cluster.kubectl_ok(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "-n",
        RELEASE_NAMESPACE,
        "--duration",
        "2h",
    ])?;
    cluster.token_kubeconfig(SERVICE_ACCOUNT, &token)
}

pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    pub identity: String,
}

impl Operator {
    /// Starts one replica with `kubeconfig` for cluster `cluster_name`.
    pub fn start(
        kubeconfig: &Path,
        cluster_name: &str,
        identity: &str,
        log_dir: &Path,
    ) -> Operator {
        Operator::start_with(kubeconfig, cluster_name, identity, log_dir, &[])
    }

    /// [`Operator::start`] with more arguments for `meridian-operator run`.
    pub fn start_with(
        kubeconfig: &Path,
        cluster_name: &str,
        identity: &str,
        log_dir: &Path,
        extra: &[String],
    ) -> Operator {
        let log = log_dir.join(format!("operator-{identity}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("operator log");
        let child = Command::new(binary("meridian-operator"))
            .args([
                "run",
                "--cluster",
                cluster_name,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--identity",
                identity,
                "--lease-namespace",
                RELEASE_NAMESPACE,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,meridian_operator=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start meridian-operator run");
        Operator {
            child: Some(child),
            log,
            identity: identity.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where it serves /metrics, /healthz and /readyz (started on port 0),
    /// from its log; `None` until it says.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let text = self.log_text();
        let line = text
            .lines()
            .find(|l| l.contains("serving /metrics, /healthz and /readyz"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        addr.parse().ok()
    }

    /// GETs `path` from its metrics port: the status code and the body.
    pub fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self
            .metrics_addr()
            .context("the operator has not said where it serves")?;
        http_get(addr, path)
    }

    /// Stops it with SIGTERM (SIGKILL if `hard`) and waits.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), if hard { "KILL" } else { "TERM" });
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// A plain HTTP/1.1 GET of `path` at `addr`: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response's head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}
