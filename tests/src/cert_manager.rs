//! cert-manager's controller (v1.11.5, built from its Go module by
//! `tests/control-plane/build-cert-manager`) as a process against a test
//! control plane, out of cluster: it reads and writes through the admin
//! kubeconfig, without leader election, webhook or cainjector (nothing
//! validates or defaults Certificates then; the operator writes complete
//! ones).
//!
//! ```no_run
//! use meridian_tests::cert_manager::CertManager;
//! use meridian_tests::control_plane::ControlPlane;
//! let cluster = ControlPlane::start().unwrap();
//! let cert_manager = CertManager::install(&cluster).unwrap();
//! // Issuers and Certificates now work; dropping `cert_manager` stops it.
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::control_plane::{ControlPlane, scripts_dir};
use crate::local_mode::signal;

/// The controllers a CA issuer needs; no ACME, no ingress or gateway shims.
const CONTROLLERS: &str = "issuers,clusterissuers,certificaterequests-approver,certificaterequests-issuer-ca,certificaterequests-issuer-selfsigned,certificates-trigger,certificates-issuing,certificates-key-manager,certificates-request-manager,certificates-readiness,certificates-revision-manager";

/// The CRDs `cert-manager-crds.yaml` defines.
pub const CRDS: [&str; 6] = [
    "certificaterequests.cert-manager.io",
    "certificates.cert-manager.io",
    "challenges.acme.cert-manager.io",
    "clusterissuers.cert-manager.io",
    "issuers.cert-manager.io",
    "orders.acme.cert-manager.io",
];

/// Builds cert-manager's controller (or finds it in the cache) and returns
/// the directory holding `cert-manager-controller` and
/// `cert-manager-crds.yaml`.
pub fn build() -> anyhow::Result<PathBuf> {
    let output = Command::new(scripts_dir().join("build-cert-manager"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/control-plane/build-cert-manager")?;
    if !output.status.success() {
        bail!(
            "tests/control-plane/build-cert-manager failed with {}",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(bin))
}

/// A running cert-manager controller. Dropping it stops it.
pub struct CertManager {
    child: Option<Child>,
    /// Its log, among the control plane's (so failures show its tail).
    pub log: PathBuf,
}

impl CertManager {
    /// Builds cert-manager, installs its CRDs (waiting until they are
    /// established) and starts its controller.
    pub fn install(cluster: &ControlPlane) -> anyhow::Result<CertManager> {
        let bin = build()?;
        let crds = bin.join("cert-manager-crds.yaml");
        // Created, not applied: the last-applied annotation of the largest
        // CRDs would exceed the annotation size limit.
        cluster.kubectl_ok(&["create", "-f", crds.to_str().context("a UTF-8 path")?])?;
        cluster.wait_crds_established(&CRDS)?;
        Self::start(cluster, &bin)
    }

    /// Starts the controller from `bin` against `cluster`. ClusterIssuers
    /// keep their Secrets in `cert-manager`.
    pub fn start(cluster: &ControlPlane, bin: &Path) -> anyhow::Result<CertManager> {
        let log = cluster.log_dir().join("cert-manager.log");
        let file = std::fs::File::create(&log).context("cert-manager's log")?;
        let child = Command::new(bin.join("cert-manager-controller"))
            .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
            .args([
                "--leader-elect=false",
                "--cluster-resource-namespace=cert-manager",
                "--metrics-listen-address=127.0.0.1:0",
                // A deleted Certificate takes its Secret along: a Region
                // deleted takes its identity.
                "--enable-certificate-owner-ref=true",
                &format!("--controllers={CONTROLLERS}"),
                "--v=2",
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("cert-manager's log")?)
            .stderr(file)
            .spawn()
            .context("starting cert-manager-controller")?;
        // `down` stops it too, should this process die before dropping it.
        std::fs::write(
            cluster.dir.join("run/cert-manager.pid"),
            child.id().to_string(),
        )
        .context("writing run/cert-manager.pid")?;
        Ok(CertManager {
            child: Some(child),
            log,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        self.stop();
    }
}
